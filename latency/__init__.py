"""Generic latency tables: measure nn.Modules / ONNX models per device, look up, validate.

Never imports `proxyless`. Heavy pieces (backends, profiling, validation) live in their
own modules; only the table types are re-exported here so `import latency` stays light.
"""

from latency.errors import MissingKeyError, TableError
from latency.header import TableHeader
from latency.keys import OpKey
from latency.table import Entry, LatencyTable

__all__ = ["Entry", "LatencyTable", "MissingKeyError", "OpKey", "TableError", "TableHeader"]
