"""Reads the results topic and reports how many predictions match the producer's labels.

python examples/events/reader.py
python examples/events/reader.py --broker "redis://127.0.0.1:6379/0?stream=predictions&group=reader"
"""

from __future__ import annotations

import argparse
import json

from mlyard.consumers.urls import open_source
from mlyard.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default=None, help="Source URL; default: the embedded queue.")
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args()
    home = load_settings().home
    broker = args.broker or f"sqlite:///{home / 'events.db'}?topic=predictions"
    source = open_source(broker, "reader")
    total = correct = 0
    while deliveries := source.receive(500, args.timeout):
        for delivery in deliveries:
            result = json.loads(delivery.payload)
            prediction = result["results"][0]["predictions"][0]
            total += 1
            correct += int(prediction == result["data"]["label"])
        source.acknowledge(deliveries)
    accuracy = correct / total if total else 0.0
    print(json.dumps({"results": total, "correct": correct, "accuracy": round(accuracy, 4)}))


if __name__ == "__main__":
    main()
