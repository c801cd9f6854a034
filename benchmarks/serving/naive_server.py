"""The baseline a team writes by hand: FastAPI calling the model once per request.

Usage: python naive_server.py MODEL_URI PORT (tracking URI from MLFLOW_TRACKING_URI).
"""

from __future__ import annotations

import sys
from typing import Any

import mlflow.pyfunc
import numpy as np
import uvicorn
from fastapi import FastAPI

model = mlflow.pyfunc.load_model(sys.argv[1])
app = FastAPI()


@app.post("/predict")
def predict(body: dict[str, Any]) -> dict[str, Any]:
    # A sync endpoint: FastAPI runs it in its thread pool, one model call per request.
    rows = np.asarray(body["instances"], dtype=np.float64)
    return {"predictions": np.asarray(model.predict(rows)).tolist()}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
