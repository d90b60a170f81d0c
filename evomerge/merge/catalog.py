"""Every built-in merge method, declared as data: name, parameters, defaults, input contract, paper.

This is the one place to read what evomerge offers (``evomerge methods`` prints it) and the one
place a new method is declared. Each declaration names its tensor function as
``"evomerge.merge.methods.<module>:<function>"``; the module (and torch) is imported when the method
first merges a tensor, so listing methods, validating recipes and mergekit YAML, and building
search spaces stay free of torch. The math, its paper and the differences from mergekit are in
each module's docstring. Importing this module registers every method once.
"""

from __future__ import annotations

from evomerge.merge.methods import params as P
from evomerge.merge.registry import register
from evomerge.merge.spec import MergeMethod, ParamSpec

_M = "evomerge.merge.methods."

# ---- weight-space averages ---------------------------------------------------------------------------

LINEAR = register(MergeMethod(
    name="linear",
    impl=_M + "linear:_linear",
    params=(P.WEIGHT, P.normalize(True)),
    needs_base=False,
    reference="arXiv:2203.05482",
    mergekit_name="linear",
    summary="weighted average of the source weights (normalize divides by Σ weight_k)",
))

SLERP = register(MergeMethod(
    name="slerp",
    impl=_M + "slerp:_slerp",
    params=(ParamSpec("t", "global", default=None, low=0.0, high=1.0,
                      help="interpolation position: 0 gives the first source (mergekit's base_model), "
                           "1 the second"),),
    needs_base=False,
    min_sources=2,
    max_sources=2,
    reference="Shoemake, SIGGRAPH 1985 (no arXiv paper)",
    mergekit_name="slerp",
    summary="spherical interpolation between exactly two sources; linear when they are near-colinear",
))

NUSLERP = register(MergeMethod(
    name="nuslerp",
    impl=_M + "nuslerp:_nuslerp",
    params=(
        P.WEIGHT,
        ParamSpec("nuslerp_row_wise", "global", default=False, kind="bool",
                  help="interpolate each vector along the first dimension (with nuslerp_flatten: false)"),
        ParamSpec("nuslerp_flatten", "global", default=True, kind="bool",
                  help="interpolate the whole tensor as one vector; false: each row (or column) on its own"),
    ),
    needs_base=False,
    optional_base=True,
    min_sources=2,
    max_sources=2,
    reference="mergekit nuslerp (no paper)",
    mergekit_name="nuslerp",
    summary="spherical interpolation of two models at t = w₂/(w₁+w₂), flattened or per row/column; "
            "with a base, of their task vectors",
))

MULTISLERP = register(MergeMethod(
    name="multislerp",
    impl=_M + "multislerp:_multislerp",
    params=(
        P.WEIGHT,
        ParamSpec("normalize_weights", "global", default=True, kind="bool",
                  help="divide the weights by their sum"),
        ParamSpec("eps", "global", default=1e-8, low=0.0, low_open=True,
                  help="added to norms before dividing by them"),
    ),
    needs_base=False,
    optional_base=True,
    min_sources=1,
    reference="mergekit multislerp (no paper; goddard.blog/posts/multislerp-wow-what-a-cool-idea)",
    mergekit_name="multislerp",
    summary="weighted spherical barycentre of N models (of their task vectors with a base), "
            "scaled to the weighted mean norm",
))

KARCHER = register(MergeMethod(
    name="karcher",
    impl=_M + "karcher:_karcher",
    params=(
        ParamSpec("max_iter", "global", default=10, low=1, kind="int",
                  help="most fixed-point iterations of the Karcher mean"),
        ParamSpec("tol", "global", default=1e-5, low=0.0, low_open=True,
                  help="stop when the tangent step is shorter; also the norm below which a tensor is ignored"),
    ),
    needs_base=False,
    min_sources=1,
    reference="arXiv:2603.04972",
    mergekit_name="karcher",
    summary="Riemannian (Karcher) mean of the models' directions on the unit sphere, times their mean norm",
))

PASSTHROUGH = register(MergeMethod(
    name="passthrough",
    impl=_M + "passthrough:_passthrough",
    params=(ParamSpec("scale", "per_source", default=1.0, help="multiplies the tensor"),),
    needs_base=False,
    min_sources=1,
    max_sources=1,
    reference="mergekit passthrough (no paper)",
    mergekit_name="passthrough",
    summary="copy the single source's tensor, times its scale",
))

# ---- task vectors: task arithmetic and its sparsified, sign-consensus variants -------------------------

TASK_ARITHMETIC = register(MergeMethod(
    name="task_arithmetic",
    impl=_M + "task_arithmetic:_task_arithmetic",
    params=(P.WEIGHT, P.normalize(False), P.LAMBDA, P.INT8_MASK, P.IGNORED_DENSITY, P.IGNORED_RESCALE),
    needs_base=True,
    reference="arXiv:2212.04089",
    mergekit_name="task_arithmetic",
    summary="base + lambda * Σ weight_k (θ_k − base); normalize divides by Σ weight_k",
))

TIES = register(MergeMethod(
    name="ties",
    impl=_M + "ties:_ties",
    params=(P.WEIGHT, P.DENSITY, P.normalize(True), P.rescale(False), P.LAMBDA, P.INT8_MASK),
    needs_base=True,
    reference="arXiv:2306.01708",
    mergekit_name="ties",
    summary="trim each task vector to its top-density entries by magnitude, elect signs on the "
            "weighted sum, average agreeing entries, add to base",
))

_DARE_PARAMS = (P.WEIGHT, P.DENSITY, P.normalize(False), P.rescale(True), P.LAMBDA, P.INT8_MASK)

DARE_LINEAR = register(MergeMethod(
    name="dare_linear",
    impl=_M + "dare:_dare_linear",
    params=_DARE_PARAMS,
    needs_base=True,
    randomized=True,
    reference="arXiv:2311.03099",
    mergekit_name="dare_linear",
    summary="drop task-vector entries at random with p = 1 − density, rescale, then task arithmetic",
))

DARE_TIES = register(MergeMethod(
    name="dare_ties",
    impl=_M + "dare:_dare_ties",
    params=_DARE_PARAMS,
    needs_base=True,
    randomized=True,
    reference="arXiv:2311.03099",
    mergekit_name="dare_ties",
    summary="drop task-vector entries at random with p = 1 − density, rescale, then TIES sign "
            "election and disjoint merge",
))

_BREADCRUMBS_PARAMS = (P.WEIGHT, P.DENSITY, P.GAMMA, P.normalize(False), P.rescale(False), P.LAMBDA,
                       P.INT8_MASK)

BREADCRUMBS = register(MergeMethod(
    name="breadcrumbs",
    impl=_M + "breadcrumbs:_breadcrumbs_linear",
    params=_BREADCRUMBS_PARAMS,
    needs_base=True,
    reference="arXiv:2312.06795",
    mergekit_name="breadcrumbs",
    summary="drop the largest gamma fraction and the smallest entries of each task vector so that "
            "density remains, then task arithmetic",
))

BREADCRUMBS_TIES = register(MergeMethod(
    name="breadcrumbs_ties",
    impl=_M + "breadcrumbs:_breadcrumbs_ties",
    params=_BREADCRUMBS_PARAMS,
    needs_base=True,
    reference="arXiv:2312.06795",
    mergekit_name="breadcrumbs_ties",
    summary="breadcrumbs sparsification followed by TIES sign election and disjoint merge",
))

DELLA = register(MergeMethod(
    name="della",
    impl=_M + "della:_della_ties",
    params=(P.WEIGHT, P.DENSITY, P.EPSILON, P.normalize(True), P.rescale(True), P.LAMBDA, P.INT8_MASK),
    needs_base=True,
    randomized=True,
    reference="arXiv:2406.11617",
    mergekit_name="della",
    summary="drop task-vector entries at random, larger magnitudes kept more often (density ± epsilon), "
            "rescale, then TIES sign election and disjoint merge",
))

DELLA_LINEAR = register(MergeMethod(
    name="della_linear",
    impl=_M + "della:_della_linear",
    params=(P.WEIGHT, P.DENSITY, P.EPSILON, P.normalize(False), P.rescale(True), P.LAMBDA, P.INT8_MASK),
    needs_base=True,
    randomized=True,
    reference="arXiv:2406.11617",
    mergekit_name="della_linear",
    summary="DELLA's magnitude-ranked random drop and rescale, then task arithmetic",
))

SCE = register(MergeMethod(
    name="sce",
    impl=_M + "sce:_sce",
    params=(
        ParamSpec("select_topk", "global", default=1.0, low=0.0, high=1.0,
                  help="fraction of entries kept, those whose task vectors vary most across the sources"),
        P.INT8_MASK,
    ),
    needs_base=True,
    reference="arXiv:2408.07990",
    mergekit_name="sce",
    summary="keep the entries that vary most across task vectors, weight each source by its mean square, "
            "TIES sign election, weighted mean of agreeing entries, add to base",
))

MODEL_STOCK = register(MergeMethod(
    name="model_stock",
    impl=_M + "model_stock:_model_stock",
    params=(ParamSpec("filter_wise", "global", default=False, kind="bool",
                      help="one interpolation ratio per row instead of per tensor"),),
    needs_base=True,
    min_sources=2,
    reference="arXiv:2403.19522",
    mergekit_name="model_stock",
    summary="average of the sources pulled toward the base by t = k·cos/(1 + (k − 1)·cos) "
            "of their task vectors' angle",
))

_RAM_EPSILON = ParamSpec("epsilon", "global", default=1e-5, low=0.0,
                         help="a task-vector entry counts as changed when its magnitude exceeds this")

RAM = register(MergeMethod(
    name="ram",
    impl=_M + "ram:_ram_mean",
    params=(_RAM_EPSILON,),
    needs_base=True,
    reference="arXiv:2601.13572",
    mergekit_name="ram",
    summary="entries one model changes keep its change, entries several change take their mean, "
            "added to base",
))

RAMPLUS_TL = register(MergeMethod(
    name="ramplus_tl",
    impl=_M + "ram:_ramplus_tl",
    params=(
        ParamSpec("r", "global", default=0.1, low=0.0, search_range=(0.0, 1.0),
                  help="strength of the amplification of a model's unique entries"),
        ParamSpec("alpha", "global", default=0.2, low=0.0, search_range=(0.0, 1.0),
                  help="cap on the shared-to-unique ratio ρ in the amplification 1 + r·clamp(ρ, 0, alpha)"),
        _RAM_EPSILON,
    ),
    needs_base=True,
    reference="arXiv:2601.13572",
    mergekit_name="ramplus_tl",
    summary="RAM with each model's unique entries amplified by 1 + r·clamp(shared/unique, 0, alpha), "
            "per tensor",
))

# ---- one model against the base ----------------------------------------------------------------------

ARCEE_FUSION = register(MergeMethod(
    name="arcee_fusion",
    impl=_M + "arcee_fusion:_arcee_fusion",
    params=(),
    needs_base=True,
    min_sources=1,
    max_sources=1,
    reference="mergekit arcee_fusion (no paper; arcee.ai)",
    mergekit_name="arcee_fusion",
    summary="take the model's entries whose change times the row's softmax KL divergence is an upper "
            "outlier (≥ median + 1.5 IQR); keep the base elsewhere",
))

NEARSWAP = register(MergeMethod(
    name="nearswap",
    impl=_M + "nearswap:_nearswap",
    params=(ParamSpec("t", "global", default=None, low=0.0, search_range=(0.0, 0.01),
                      help="distance under which an entry takes the model's value (farther ones move by t)"),),
    needs_base=True,
    min_sources=1,
    max_sources=1,
    reference="mergekit nearswap (no paper; huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001)",
    mergekit_name="nearswap",
    summary="per entry, interpolate toward the model with weight t/|difference| clamped to [0, 1]",
))

# ---- beyond mergekit: subspace methods (no mergekit export) --------------------------------------------

TSV_M = register(MergeMethod(
    name="tsv_m",
    impl=_M + "tsv:_tsv_m",
    params=(P.LAMBDA,),
    needs_base=True,
    reference="arXiv:2412.00081",
    summary="keep each task vector's top 1/T singular directions, orthogonalise them across tasks, "
            "rebuild with their singular values; mean for non-matrices",
))

ISO_C = register(MergeMethod(
    name="iso_c",
    impl=_M + "isotropic:_iso_c",
    params=(P.LAMBDA,),
    needs_base=True,
    reference="arXiv:2502.04959",
    summary="sum the task vectors, flatten the sum's singular spectrum to its mean (isotropic in the "
            "common subspace); mean for non-matrices",
))

ISO_CTS = register(MergeMethod(
    name="iso_cts",
    impl=_M + "isotropic:_iso_cts",
    params=(
        P.LAMBDA,
        ParamSpec("common_space_fraction", "global", default=0.8, low=0.0, high=1.0,
                  help="share of the singular directions taken from the summed task vectors; the rest are "
                       "split evenly among the tasks' own directions"),
    ),
    needs_base=True,
    reference="arXiv:2502.04959",
    summary="Iso-C's common subspace plus each task's own top directions, orthonormalised, with a flat "
            "(mean) singular spectrum; mean for non-matrices",
))
