"""Event producer: stores hand-written digit images as objects in the artifact store and
publishes one message per object, as cameras or upstream systems do.

    python examples/events/producer.py --count 200
    python examples/events/producer.py --broker "redis://127.0.0.1:6379/0?stream=digits"
"""

from __future__ import annotations

import argparse
import io
import json

import numpy as np
from sklearn.datasets import load_digits

from mlyard.artifacts.store import ArtifactStore
from mlyard.consumers.urls import open_sink
from mlyard.settings import load_settings


def default_queue() -> str:
    return f"sqlite:///{load_settings().home / 'events.db'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--broker", default=None, help="Sink URL; default: the embedded queue.")
    args = parser.parse_args()
    broker = args.broker or f"{default_queue()}?topic=digits"
    store = ArtifactStore.from_settings(load_settings())
    digits = load_digits()
    messages = []
    for index in range(args.count):
        buffer = io.BytesIO()
        np.save(buffer, (digits.data[index] / 16.0).astype(np.float64))
        key = f"events/digits/{index:05d}.npy"
        store.write_key(key, buffer.getvalue())
        messages.append(
            json.dumps(
                {"id": f"digit-{index}", "objects": [key], "label": int(digits.target[index])}
            ).encode()
        )
    open_sink(broker).publish(messages)
    print(f"published {len(messages)} messages to {broker.split('?')[0]}")


if __name__ == "__main__":
    main()
