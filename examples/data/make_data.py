"""Write the generated example data in this folder (deterministic: run it again, get the same files).

    python examples/data/make_data.py

- ``weather.csv``: three years of daily synthetic weather and energy demand
  (``date,temperature,humidity,demand``) for the ``csv`` task;
- ``waveforms.csv``: 180 labelled sequences (UCR style ``label,x_1,...``,
  lengths 20-40) of three noisy wave shapes for ``sequence_classification``;
- small inputs for ``lstmkit predict``: ``sine_inputs.txt``,
  ``copy_inputs.txt``, ``waveforms_unlabelled.csv``, ``prime.txt``.

``lighthouse.txt`` (the ``char_lm`` text) is hand-written, not generated.
"""
from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def weather(rng: np.random.Generator, days: int = 1096) -> str:
    """Seasonal temperature with AR(1) weather noise; humidity and demand follow it."""
    day = np.arange(days)
    noise = np.zeros(days)
    for t in range(1, days):
        noise[t] = 0.8 * noise[t - 1] + rng.normal(0, 1.5)
    temperature = 12 + 9 * np.sin(2 * np.pi * (day - 110) / 365.25) + noise
    humidity = np.clip(72 - 1.1 * (temperature - 12) + rng.normal(0, 4, days), 20, 100)
    start = datetime.date(2021, 1, 1)
    weekday = np.array([(start + datetime.timedelta(int(d))).weekday() for d in day])
    demand = 100 + 2.5 * np.abs(temperature - 18) - 12 * (weekday >= 5) + rng.normal(0, 3, days)
    lines = ["date,temperature,humidity,demand"]
    for d in day:
        date = (start + datetime.timedelta(int(d))).isoformat()
        lines.append(f"{date},{temperature[d]:.2f},{humidity[d]:.1f},{demand[d]:.1f}")
    return "\n".join(lines) + "\n"


def wave(shape: str, length: int, rng: np.random.Generator) -> np.ndarray:
    period = rng.uniform(8, 16)
    phase = rng.uniform(0, 1)
    u = (np.arange(length) / period + phase) % 1.0  # position within the period, 0..1
    if shape == "sine":
        x = np.sin(2 * np.pi * u)
    elif shape == "square":
        x = np.where(u < 0.5, 1.0, -1.0)
    else:  # sawtooth
        x = 2 * u - 1
    return rng.uniform(0.7, 1.3) * x + rng.normal(0, 0.25, length)


def waveforms(rng: np.random.Generator, count: int, labelled: bool = True) -> str:
    shapes = ["sine", "square", "sawtooth"]
    lines = []
    for i in range(count):
        shape = shapes[i % 3]
        values = ",".join(f"{v:.3f}" for v in wave(shape, int(rng.integers(20, 41)), rng))
        lines.append(f"{shape},{values}" if labelled else values)
    return "\n".join(lines) + "\n"


def main() -> None:
    rng = np.random.default_rng(20240601)
    (HERE / "weather.csv").write_text(weather(rng))
    (HERE / "waveforms.csv").write_text(waveforms(rng, 180))
    (HERE / "waveforms_unlabelled.csv").write_text(waveforms(rng, 6, labelled=False))
    t = np.arange(50)
    sines = [np.sin(2 * np.pi * t / p + q) for p, q in ((12, 0.0), (20, 1.0), (30, 2.0))]
    (HERE / "sine_inputs.txt").write_text("\n".join(",".join(f"{v:.3f}" for v in s) for s in sines) + "\n")
    (HERE / "copy_inputs.txt").write_text("1 2 3 4 5 6 7 8 1 2\n8 8 1 1 5 5 3 3 2 2\n")
    (HERE / "prime.txt").write_text("The keeper\nA light is \n")
    for name in sorted(p.name for p in HERE.iterdir() if p.is_file()):
        print(f"{name:28s} {(HERE / name).stat().st_size:7d} bytes")


if __name__ == "__main__":
    main()
