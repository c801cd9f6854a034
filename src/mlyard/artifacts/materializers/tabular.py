"""pandas DataFrames/Series and pyarrow Tables, as Parquet."""

from __future__ import annotations

import io
from typing import Any

from mlyard.artifacts.materializers.base import type_module


class PandasMaterializer:
    name = "pandas"

    def can_save(self, value: object) -> bool:
        if not type_module(value).startswith("pandas"):
            return False
        import pandas as pd

        return isinstance(value, pd.DataFrame | pd.Series)

    def save(self, value: object) -> tuple[bytes, dict[str, Any]]:
        import pandas as pd

        series = isinstance(value, pd.Series)
        frame = value.to_frame() if isinstance(value, pd.Series) else value
        assert isinstance(frame, pd.DataFrame)
        buffer = io.BytesIO()
        frame.to_parquet(buffer, engine="pyarrow")
        return buffer.getvalue(), {
            "series": series,
            "rows": len(frame),
            "columns": [str(c) for c in frame.columns][:100],
        }

    def load(self, data: bytes, metadata: dict[str, Any]) -> object:
        import pandas as pd

        frame = pd.read_parquet(io.BytesIO(data), engine="pyarrow")
        return frame.iloc[:, 0] if metadata.get("series") else frame


class ArrowMaterializer:
    name = "arrow"

    def can_save(self, value: object) -> bool:
        if not type_module(value).startswith("pyarrow"):
            return False
        import pyarrow as pa

        return isinstance(value, pa.Table)

    def save(self, value: object) -> tuple[bytes, dict[str, Any]]:
        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        pq.write_table(value, buffer)
        return (
            buffer.getvalue(),
            {
                "rows": value.num_rows,  # type: ignore[attr-defined]
                "columns": list(value.column_names)[:100],  # type: ignore[attr-defined]
            },
        )

    def load(self, data: bytes, metadata: dict[str, Any]) -> object:
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(data))
