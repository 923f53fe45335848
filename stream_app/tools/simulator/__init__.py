"""The simulator: a synthetic SaaS customer base that emits contract-valid events (``engine``),
its world (``world``: vocabulary, constants, configuration, records, ground truth) and its
files and command line (``files``)."""

from stream_app.tools.simulator.engine import Simulator
from stream_app.tools.simulator.files import main, write_jsonl, write_truth
from stream_app.tools.simulator.world import FEATURES, PLANS, TOPICS, CustomerTruth, SimConfig, SimEvent

__all__ = ["TOPICS", "FEATURES", "PLANS", "SimConfig", "SimEvent", "CustomerTruth", "Simulator", "write_jsonl",
           "write_truth", "main"]
