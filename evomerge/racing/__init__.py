"""Racing: score a candidate in stages over a seeded order of each task's examples and stop it early
when it cannot plausibly beat the reference (issue 17). See ``bound`` for the test, ``staged`` for the
worker side and ``driver`` for what the Study attaches to each candidate."""
