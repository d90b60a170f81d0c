"""MM-MO's surrogate side (Li et al., arXiv 2407.00487), on BoTorch: one GP per objective, EHVI
candidates, Fisher-information screening.

Inputs are in the unit cube, outputs in *maximisation* form and z-scored per objective (as the
authors' code does), so the posterior variances of different objectives are comparable and the
Fisher information ``Σ_m 1/σ²_m(x)`` is unit-free.

Candidate generation (``acquisition``):

* ``"qehvi"`` / ``"qlogehvi"`` — the paper's batch acquisition: qEHVI (Daulton et al. 2020,
  arXiv 2006.05078; the log form: Ament et al. 2023, arXiv 2310.20708) over ``q`` points, optimised
  sequentially greedily with the earlier points as pending. Its inclusion–exclusion over pending
  points costs O(2^q) per evaluation: q = 10 takes over 6 minutes per batch on a 2-core CPU.
* ``"ehvi"`` (default) — the same sequential greedy batch with the analytic one-point EHVI (Yang
  et al. 2019) and the *Kriging believer* for pending points (Ginsbourger et al. 2010): each chosen
  point is added to the front and to the GP at its posterior mean, so the next one looks elsewhere.
  Linear in q; about a second per point on a busy 2-core CPU.

Randomness: every function takes a ``seed`` and runs under ``torch.random.fork_rng`` with
``torch.manual_seed(seed)``, on one thread, so results depend on the arguments only (bit-identical on
a resume, whatever the caller's torch RNG or thread count) and the caller's RNG is left untouched.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import torch

Acquisition = Literal["ehvi", "qehvi", "qlogehvi"]
ACQUISITIONS: tuple[str, ...] = ("ehvi", "qehvi", "qlogehvi")


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seeded private torch RNG, one thread, GPyTorch's debug checks off, warnings silenced; all restored after.

    One thread is also the fast choice: these GPs hold tens of points, and a second thread only adds
    synchronisation (a GP fit takes 3-10x longer with two threads on a busy 2-core machine).
    """
    import gpytorch
    import linear_operator
    from botorch.exceptions.warnings import BotorchWarning
    from gpytorch.utils.warnings import GPInputWarning, NumericalWarning

    threads = torch.get_num_threads()
    with (torch.random.fork_rng(devices=[]), warnings.catch_warnings(), gpytorch.settings.debug(False),
          linear_operator.settings.debug(False)):
        for category in (BotorchWarning, NumericalWarning, GPInputWarning):
            warnings.simplefilter("ignore", category)
        warnings.filterwarnings("ignore", message=r".*(qExpectedHypervolumeImprovement|legacy).*")
        torch.manual_seed(int(seed))
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def standardize(y: np.ndarray) -> np.ndarray:
    """Z-score per column (sample std, as the authors' ``z_score_normalize``); a constant column → 0."""
    y = np.asarray(y, dtype=np.float64)
    std = y.std(axis=0, ddof=1) if len(y) > 1 else np.ones(y.shape[1])
    return (y - y.mean(axis=0)) / np.where(std > 0, std, 1.0)


def reference_point(y: np.ndarray) -> np.ndarray:
    """Slightly worse than the worst observed value per objective (maximisation): min − 10 % of the range.

    The authors take 0.9 × min of the initial values (1.1 × for negative ones) in raw units; on
    z-scored values a multiplicative margin is meaningless, so the margin is a fraction of the range.
    """
    lo, hi = y.min(axis=0), y.max(axis=0)
    return lo - 0.1 * np.where(hi > lo, hi - lo, 1.0)


def fit_gps(x: np.ndarray, y: np.ndarray, seed: int = 0) -> Any:
    """A ``ModelListGP`` of one ``SingleTaskGP`` per column of ``y``, hyper-parameters by marginal likelihood.

    A fit that fails (``ModelFittingError``) keeps the prior hyper-parameters instead of stopping the search;
    BoTorch's retries after a failed attempt draw from the torch RNG, hence the ``seed``.
    """
    from botorch.exceptions.errors import ModelFittingError
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import ModelListGP, SingleTaskGP
    from gpytorch.mlls import SumMarginalLogLikelihood

    tx = torch.as_tensor(x, dtype=torch.float64)
    ty = torch.as_tensor(y, dtype=torch.float64)
    with deterministic(seed):
        model = ModelListGP(*[SingleTaskGP(tx, ty[:, i : i + 1], outcome_transform=None)
                              for i in range(ty.shape[1])])
        with contextlib.suppress(ModelFittingError):
            fit_gpytorch_mll(SumMarginalLogLikelihood(model.likelihood, model))
    return model.eval()


def ehvi_candidates(model: Any, y: np.ndarray, ref: np.ndarray, q: int, *, acquisition: Acquisition = "ehvi",
                    num_restarts: int = 10, raw_samples: int = 512, maxiter: int = 200, mc_samples: int = 128,
                    seed: int = 0) -> np.ndarray:
    """``q`` points of the unit cube maximising (q)EHVI over the observed front of ``y``, shape (q, d)."""
    from botorch.optim import optimize_acqf
    from botorch.utils.multi_objective.box_decompositions.non_dominated import FastNondominatedPartitioning

    d = model.models[0].train_inputs[0].shape[-1]
    bounds = torch.stack([torch.zeros(d), torch.ones(d)]).to(torch.float64)
    ty = torch.as_tensor(y, dtype=torch.float64)
    tref = torch.as_tensor(ref, dtype=torch.float64)
    options = {"batch_limit": 5, "maxiter": int(maxiter)}
    with deterministic(seed):
        if acquisition in ("qehvi", "qlogehvi"):
            from botorch.acquisition.multi_objective.logei import qLogExpectedHypervolumeImprovement
            from botorch.acquisition.multi_objective.monte_carlo import qExpectedHypervolumeImprovement
            from botorch.sampling.normal import SobolQMCNormalSampler

            cls = qExpectedHypervolumeImprovement if acquisition == "qehvi" else qLogExpectedHypervolumeImprovement
            acq = cls(model=model, ref_point=tref, partitioning=FastNondominatedPartitioning(ref_point=tref, Y=ty),
                      sampler=SobolQMCNormalSampler(torch.Size([int(mc_samples)]), seed=int(seed)))
            x, _ = optimize_acqf(acq, bounds, q=q, num_restarts=num_restarts, raw_samples=raw_samples,
                                 options=options, sequential=True)
            return x.detach().numpy().astype(np.float64)
        return _ehvi_kriging_believer(model, ty, tref, q, bounds, num_restarts, raw_samples, options)


def _ehvi_kriging_believer(model: Any, ty: torch.Tensor, tref: torch.Tensor, q: int, bounds: torch.Tensor,
                           num_restarts: int, raw_samples: int, options: dict[str, Any]) -> np.ndarray:
    from botorch.acquisition.multi_objective.analytic import ExpectedHypervolumeImprovement
    from botorch.models import ModelListGP
    from botorch.optim import optimize_acqf
    from botorch.utils.multi_objective.box_decompositions.non_dominated import FastNondominatedPartitioning

    picks = []
    current = model
    for _ in range(q):
        acq = ExpectedHypervolumeImprovement(current, tref.tolist(), FastNondominatedPartitioning(tref, Y=ty))
        x, _ = optimize_acqf(acq, bounds, q=1, num_restarts=num_restarts, raw_samples=raw_samples, options=options)
        x = x.detach()
        picks.append(x)
        with torch.no_grad():
            mean = current.posterior(x).mean  # (1, m): believed as if observed
        ty = torch.cat([ty, mean])
        current = ModelListGP(*[gp.condition_on_observations(x, mean[:, i : i + 1])
                                for i, gp in enumerate(current.models)])
    return torch.cat(picks).numpy().astype(np.float64)


def fisher_information(model: Any, x: np.ndarray) -> np.ndarray:
    """Σ over objectives of 1 / posterior variance at each row of ``x`` (unit cube): low = uncertain."""
    with deterministic(0), torch.no_grad():
        var = model.posterior(torch.as_tensor(x, dtype=torch.float64)).variance
    return (1.0 / var.clamp_min(1e-12)).sum(-1).numpy().astype(np.float64)


def most_uncertain(model: Any, x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` rows of ``x`` with the least Fisher information, least first (the paper's screening)."""
    return np.argsort(fisher_information(model, x), kind="stable")[:k]
