"""``char_lm``: a character language model on a text file (perplexity, sampling)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from pydantic import Field

from .base import (SPLITS, CarvedSplitOptions, Encoding, Fraction, Split, Task, TaskError, carve, data_files,
                   log_softmax, pad)
from ..train.losses import sequence_mask


class CharLMOptions(CarvedSplitOptions):
    """`task.options` of the `char_lm` task."""

    seq_len: int = Field(64, ge=1, description="Characters per training window (the model predicts each next one).")
    valid_fraction: Fraction = Field(0.1, description="Share of the train file (its end, before the test part) used for validation when task.valid is null.")
    test_fraction: Fraction = Field(0.1, description="Share of the train file (its very end) used for testing when task.test is null.")
    lowercase: bool = Field(False, description="Lower-case the text before building the vocabulary.")
    encoding: Encoding = Field("utf-8", description="Text encoding of the files.")

    train_part = "training text"  # for the error when valid_fraction + test_fraction >= 1


class CharLMTask(Task):
    """Next-character prediction.  The text comes from ``task.train``; a null
    ``task.valid``/``task.test`` is carved from the train file's end, in order
    (test: the last ``test_fraction`` of its characters; valid: the
    ``valid_fraction`` before that), so no window straddles two splits.

    The vocabulary is every character of all the split texts, sorted (so ids
    are stable).  Each split is cut into windows of ``seq_len + 1``
    characters with stride ``seq_len``: ``inputs = ids[i : i+L]``,
    ``targets = ids[i+1 : i+L+1]``; the final shorter window is kept with its
    ``lengths``.  Metrics: ``perplexity = exp(mean NLL)``,
    ``bits_per_char = mean NLL / ln 2``, next-character ``accuracy``.
    """

    name = "char_lm"
    description = "Character language model on a text file: next-character prediction, perplexity, sampling."
    options_model = CharLMOptions
    metric_names = ("perplexity", "bits_per_char", "accuracy")
    input_kind, target, loss = "tokens", "sequence", "cross_entropy"
    predict_input = "a text file with one prompt per line"
    targets_are_future_inputs = True

    def __init__(self, options=None, *, base_dir=".", seed=0, splits=None):
        super().__init__(options, base_dir=base_dir, seed=seed, splits=splits)
        o = self.options
        files = data_files(self.name, self.base_dir, self.splits, "a text file")
        texts = {k: self._read(p) for k, p in files.items() if p is not None}
        train = texts["train"]
        parts = carve(len(train), o.valid_fraction, o.test_fraction, "valid" in texts, "test" in texts)
        self.texts = {k: texts.get(k, train[part]) if k != "train" else train[part] for k, part in zip(SPLITS, parts)}
        for k, text in self.texts.items():
            if len(text) < 2:
                raise TaskError(
                    f"task char_lm: the {k} text has {len(text)} character(s); it needs at least 2 "
                    f"(use a longer task.train, or adjust task.options.valid_fraction/test_fraction)"
                )
        self.vocab = sorted(set("".join(self.texts.values())))
        self.index = {c: i for i, c in enumerate(self.vocab)}
        self.vocab_size = self.output_size = len(self.vocab)

    def _read(self, path: Path) -> str:
        try:
            text = path.read_text(encoding=self.options.encoding)
        except UnicodeDecodeError as exc:
            raise TaskError(f"{path}: cannot read as {self.options.encoding} ({exc.reason} at byte {exc.start}); if "
                            f"the file is in another encoding, set task.options.encoding (e.g. latin-1, cp1252, "
                            f"utf-16)") from None
        return text.lower() if self.options.lowercase else text

    def encode(self, text: str, where: str = "text") -> np.ndarray:
        """Character ids ``(len(text),)`` int64; characters outside the vocabulary are an error."""
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            raise TaskError(f"{where}: characters not in the training vocabulary: {''.join(unknown)!r}")
        return np.array([self.index[c] for c in text], dtype=np.int64)

    def decode(self, ids) -> str:
        """Characters of ``ids`` (any shape, flattened) as a string."""
        return "".join(self.vocab[int(i)] for i in np.asarray(ids).reshape(-1))

    def _windows(self, ids: np.ndarray) -> Split:
        L = self.options.seq_len
        starts = range(0, len(ids) - 1, L)
        inputs = [ids[i : i + L] for i in starts]
        targets = [ids[i + 1 : i + L + 1] for i in starts]
        inputs, lengths = pad([x[: len(y)] for x, y in zip(inputs, targets)], np.int64)
        targets, _ = pad(targets, np.int64)
        return Split(inputs, targets, None if np.all(lengths == inputs.shape[1]) else lengths)

    def _make_data(self):
        return {k: self._windows(self.encode(t, f"task.{k}")) for k, t in self.texts.items()}

    def metrics(self, outputs, targets, lengths=None):
        logp = log_softmax(outputs)
        targets = np.asarray(targets)
        nll = -np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
        hits = np.argmax(logp, axis=-1) == targets
        if lengths is not None:
            mask = sequence_mask(lengths, targets.shape[1])
            nll, hits = nll[mask], hits[mask]
        mean = float(np.mean(nll))
        return {"perplexity": math.exp(min(mean, 700.0)), "bits_per_char": mean / math.log(2),
                "accuracy": float(np.mean(hits))}

    def baseline(self, split):
        """Unigram: every next character predicted with its frequency in the training text."""
        found = super().baseline(split)
        return None if found is None else ("unigram", found[1])

    def read_inputs(self, path):
        """A text file; each non-empty line is one sequence (without its newline)."""
        path = Path(path)
        lines = [line for line in path.read_text(encoding=self.options.encoding).splitlines() if line]
        if self.options.lowercase:
            lines = [line.lower() for line in lines]
        if not lines:
            raise TaskError(f"{path}: no text")
        ids, lengths = pad([self.encode(line, f"{path}:{i + 1}") for i, line in enumerate(lines)], np.int64)
        return ids, (None if np.all(lengths == ids.shape[1]) else lengths)

    def format_predictions(self, outputs, lengths=None, top: int = 5):
        """Per sequence: ``{"next": [[char, probability], ...top 5], "predicted": argmax next char after each position}``."""
        logp = log_softmax(outputs)
        result = []
        for b in range(logp.shape[0]):
            n = logp.shape[1] if lengths is None else int(lengths[b])
            probs = np.exp(logp[b, n - 1])
            best = np.argsort(-probs, kind="stable")[:top]
            result.append({"next": [[self.vocab[i], round(float(probs[i]), 6)] for i in best],
                           "predicted": self.decode(np.argmax(logp[b, :n], axis=-1))})
        return result

    def sample(self, model, prime: str | None = None, length: int = 200, temperature: float = 1.0, rng=None) -> str:
        """Generate ``length`` characters after ``prime`` (returned together).

        The model reads ``prime`` (default: a newline if the vocabulary has
        one, else its first character), then each next character is drawn
        from ``softmax(logits / temperature)`` (``temperature == 0``: the
        argmax) and fed back, carrying the recurrent state.  The model runs in
        eval mode (no dropout); its mode is restored afterwards.
        """
        if temperature < 0:
            raise ValueError(f"temperature should be >= 0, got {temperature}")
        if getattr(model, "target", "sequence") != "sequence":
            raise ValueError("sampling needs a model with target='sequence'")
        rng = np.random.default_rng(rng)
        if not prime:
            prime = "\n" if "\n" in self.index else self.vocab[0]
        ids = self.encode(prime, "prime")
        was_training = model.training
        model.eval()
        try:
            logits, state = model(ids[None], state=None, return_state=True)
            generated = []
            for _ in range(length):
                z = np.asarray(logits[0, -1], dtype=np.float64)
                if temperature == 0:
                    nxt = int(np.argmax(z))
                else:
                    p = np.exp(log_softmax(z / temperature))
                    nxt = int(rng.choice(len(p), p=p / p.sum()))
                generated.append(nxt)
                logits, state = model(np.array([[nxt]], dtype=np.int64), state=state, return_state=True)
        finally:
            model.train(was_training)
        return prime + self.decode(generated)

    def warnings(self) -> list[str]:
        """Splits whose text is no longer than ``seq_len``: one short window, little to learn or measure."""
        L = self.options.seq_len
        return [f"task char_lm: the {k} text has {len(text)} characters, not more than task.options.seq_len "
                f"({L}): it is a single window of {len(text) - 1} steps, so there is little to "
                f"{'learn from' if k == 'train' else 'measure'}; lower task.options.seq_len or give more text"
                for k, text in self.texts.items() if len(text) <= L]

    def describe(self):
        sizes = ", ".join(f"{k} {len(t)}" for k, t in self.texts.items())
        return f"char_lm: {self.vocab_size} characters; text lengths {sizes}; windows of {self.options.seq_len}"
