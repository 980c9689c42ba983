"""ws-serve: SuperServe for weight-shared SuperNets.

Deploy one trained SuperNet once and serve every request through the SubNet that meets its latency
target: SubNetAct actuates SubNets in place (no weight copies), SlackFit picks (SubNet, batch size)
from the slack of the earliest deadline, and a KServe v2 HTTP server, a trace-driven load generator
and a discrete-event simulator run the same policies.

Example::

    >>> import timm, torch, ws_core
    >>> from ws_serve import SubNetAct, pareto_served_set
    >>> net = timm.create_model("ws_ofa_mbv3_035_32", num_classes=10).eval()
    >>> served = pareto_served_set(net, n=4, generator=torch.Generator().manual_seed(0))
    >>> act = SubNetAct(net, served.configs)
    >>> act.actuate(served.ids[0])
    >>> act(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from ._version import __version__ as __version__
from .backends import (
    BACKENDS,
    Backend,
    CompileBackend,
    CUDAGraphBackend,
    EagerBackend,
    OnnxRuntimeBackend,
    TensorRTBackend,
)
from .deploy import Deployment, DeploySpec, build_app, deploy, load_supernet, make_local_workers, save_served_set
from .loadgen import ReplayReport, RequestRecord, replay, replay_sync
from .metrics import ServeMetrics
from .policies import (
    POLICIES,
    Decision,
    FixedSubNet,
    MaxAcc,
    MaxBatch,
    MinCost,
    Policy,
    QueueState,
    SlackFit,
    SlackFitPaper,
    make_policy,
    slackfit_buckets,
)
from .profile import Profile, ServedSet, ServedSubNet, pareto_served_set, profile_served, superserve_paper_profile
from .runtime import (
    DeadlineExceeded,
    InferenceResult,
    LocalWorker,
    Overloaded,
    Router,
    ServeError,
    Worker,
    WorkerDied,
)
from .server import ModelInfo, create_app
from .simulator import SimulationResult, simulate
from .subnetact import (
    LayerSelect,
    SubNetAct,
    SubnetNorm,
    WeightSlice,
    load_subnet_norm,
    recalibrated_statistics,
    save_subnet_norm,
)
from .traces import Trace, bursty_trace, maf_trace, read_maf_invocations, time_varying_trace

__all__ = [
    "BACKENDS",
    "POLICIES",
    "Backend",
    "CUDAGraphBackend",
    "CompileBackend",
    "DeadlineExceeded",
    "Decision",
    "DeploySpec",
    "Deployment",
    "EagerBackend",
    "FixedSubNet",
    "InferenceResult",
    "LayerSelect",
    "LocalWorker",
    "MaxAcc",
    "MaxBatch",
    "MinCost",
    "ModelInfo",
    "OnnxRuntimeBackend",
    "Overloaded",
    "Policy",
    "Profile",
    "QueueState",
    "ReplayReport",
    "RequestRecord",
    "Router",
    "ServeError",
    "ServeMetrics",
    "ServedSet",
    "ServedSubNet",
    "SimulationResult",
    "SlackFit",
    "SlackFitPaper",
    "SubNetAct",
    "SubnetNorm",
    "TensorRTBackend",
    "Trace",
    "WeightSlice",
    "Worker",
    "WorkerDied",
    "build_app",
    "bursty_trace",
    "create_app",
    "deploy",
    "load_subnet_norm",
    "load_supernet",
    "maf_trace",
    "make_local_workers",
    "make_policy",
    "pareto_served_set",
    "profile_served",
    "read_maf_invocations",
    "recalibrated_statistics",
    "replay",
    "replay_sync",
    "save_served_set",
    "save_subnet_norm",
    "simulate",
    "slackfit_buckets",
    "superserve_paper_profile",
    "time_varying_trace",
]
