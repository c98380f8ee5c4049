"""Generic latency tables: measure nn.Modules / ONNX models per device, look up, validate.

Never imports `proxyless`. Heavy pieces (backends, profiling, validation) live in their
own modules; only the table types and the predictor are re-exported here, so that
`import latency` stays light.
"""

from latency.errors import MissingKeyError, TableError
from latency.header import TableHeader
from latency.keys import OpKey
from latency.predict import Calibration, LatencyAnalysis
from latency.table import Entry, LatencyTable

__all__ = [
    "Calibration",
    "Entry",
    "LatencyAnalysis",
    "LatencyTable",
    "MissingKeyError",
    "OpKey",
    "TableError",
    "TableHeader",
]
