"""Request and response bodies of the Open Inference Protocol v2 over REST (KServe/Triton).

Tensors travel as ``{"name", "shape", "datatype", "data"}`` with ``data`` flattened in row-major
order (nested lists are accepted too), or as raw bytes after the JSON with the binary tensor
extension (``binary_tensors.py``). Errors are ``{"error": "..."}``. The plain JSON
``/predict`` bodies live here as well, since they are the other wire format of the server.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mlyard.serving.tensors import V2_DATATYPES

Parameters = dict[str, Any]


class ErrorResponse(BaseModel):
    """Every error the server returns, as the v2 protocol specifies it."""

    error: str = Field(description="What was wrong with the request, for people.")


class ServerMetadataResponse(BaseModel):
    name: str = Field(description="Server name.")
    version: str = Field(description="Server version.")
    extensions: list[str] = Field(default_factory=list, description="Protocol extensions.")


class TensorMetadata(BaseModel):
    name: str
    datatype: str = Field(description=f"One of {', '.join(V2_DATATYPES)}.")
    shape: list[int] = Field(description="Dimensions; -1 means variable size.")
    parameters: Parameters | None = Field(
        default=None,
        description="Present when the shape is not known or not from a signature: "
        "shape_known (bool) and a description.",
    )


class ModelMetadataResponse(BaseModel):
    name: str
    versions: list[str] = Field(default_factory=list)
    platform: str = Field(description="Framework of the model, e.g. 'sklearn' or 'pytorch'.")
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ReadyResponse(BaseModel):
    ready: bool


class LiveResponse(BaseModel):
    live: bool


class RequestInput(BaseModel):
    """One input tensor of an inference request."""

    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any] | None = Field(
        default=None,
        description="Tensor contents, flattened row-major (or nested); absent when "
        "parameters.binary_data_size says how many bytes of the body after the JSON hold it.",
    )


class RequestOutput(BaseModel):
    """An output the client asks for; without any, all outputs are returned."""

    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: Parameters | None = None


class InferenceRequest(BaseModel):
    """``POST /v2/models/{name}/infer`` body."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any] | None = Field(default=None, description="Absent for a binary output.")


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class PredictRequest(BaseModel):
    """``POST /predict`` body: rows as ``instances``, or ``inputs`` (a list or named lists)."""

    model_config = ConfigDict(extra="forbid")

    instances: list[Any] | None = Field(default=None, description="One entry per row.")
    inputs: list[Any] | dict[str, list[Any]] | None = Field(
        default=None, description="Rows, or input name -> rows for models with several inputs."
    )


class PredictResponse(BaseModel):
    predictions: list[Any] | dict[str, list[Any]]
