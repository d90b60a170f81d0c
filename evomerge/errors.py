"""The small exception hierarchy every evomerge error belongs to.

Messages name the file, key or tensor at fault and say what to do, so that a
user of a 30-hour search can fix the input without reading a traceback.
"""

from __future__ import annotations


class EvomergeError(Exception):
    """Base of all errors evomerge raises on purpose."""


class ConfigError(EvomergeError):
    """A config, recipe or YAML file is malformed or inconsistent."""


class CheckpointError(EvomergeError):
    """A checkpoint is missing, corrupt, or incompatible with the others."""


class MergeError(EvomergeError):
    """A merge method got inputs it cannot combine (shapes, parameters, sources)."""


class FitnessError(EvomergeError):
    """A fitness task is malformed or could not score a candidate."""


class IgnoredKeyWarning(UserWarning):
    """A key mergekit accepts and ignores: accepted and recorded here too, and named, since it changes nothing."""
