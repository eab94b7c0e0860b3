"""Benchmark prompts x temperatures against a (mock) LLM API: trials x conditions, with the
API's rate limits handled by retries, a start-rate cap, and an abort when the key is bad.

    python examples/llm_benchmark.py                     # 2 prompts x 3 temperatures x 4 trials
    python examples/llm_benchmark.py bad.db --bad-key    # every call fails: stops after 5

The mock client answers after a short delay and raises RateLimitError (HTTP 429) on every
fourth call, as a busy API does; ``retries`` with ``retry_on=(RateLimitError,)`` runs those
calls again after a jittered backoff, and ``rate_limit`` caps how fast calls start. With a
bad key every call raises AuthenticationError, which is not retried, and
``max_consecutive_failures`` stops the batch instead of burning the whole quota.
Function tasks on threads suit this: they mostly wait for the network.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import statistics
import threading
import time

from xetrack_c import ExperimentSpec, log_metrics, run_multiple

PROMPTS = {
    "terse": "Answer in one word: what colour is the sky?",
    "polite": "Could you please tell me what colour the sky is?",
}
TEMPERATURES = [0.0, 0.7, 1.0]
TRIALS = 4


class RateLimitError(Exception):
    """HTTP 429: slow down and try again."""


class AuthenticationError(Exception):
    """HTTP 401: the API key is wrong; retrying cannot help."""


class MockLLM:
    """Stands for an API client: a little latency, a 429 on every fourth call."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self._calls = 0
        self._lock = threading.Lock()

    def complete(self, prompt: str, temperature: float, rng) -> str:
        with self._lock:
            self._calls += 1
            calls = self._calls
        time.sleep(0.005)
        if self.api_key != "sk-good":
            raise AuthenticationError("401 Unauthorized: invalid API key")
        if calls % 4 == 0:
            raise RateLimitError("429 Too Many Requests")
        words = ["blue", "Blue.", "It is blue.", "azure", "grey today"]
        pick = 0 if temperature == 0 else int(rng.random() * temperature * len(words))
        return words[pick] if len(prompt) < 48 else "The sky is " + words[pick].lower()


CLIENT: MockLLM | None = None


def trial(config: dict, rng) -> dict:
    start = time.perf_counter()
    answer = CLIENT.complete(PROMPTS[config["prompt"]], config["temperature"], rng)
    correct = "blue" in answer.lower() or "azure" in answer.lower()
    metrics = {"prompt": config["prompt"], "temperature": config["temperature"],
               "trial": config["trial"], "correct": int(correct), "words": len(answer.split()),
               "latency_s": time.perf_counter() - start}
    log_metrics(metrics)
    return metrics


def main() -> None:
    global CLIENT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", nargs="?", default="llm.db",
                        help="SQLite file for the experiments and metrics tables (llm.db)")
    parser.add_argument("--bad-key", action="store_true", help="use an invalid API key")
    args = parser.parse_args()
    CLIENT = MockLLM("sk-bad" if args.bad_key else "sk-good")

    specs = [
        ExperimentSpec(function=trial, name=f"{prompt}-t{temperature}-{n}",
                       config={"prompt": prompt, "temperature": temperature, "trial": n})
        for prompt, temperature, n in itertools.product(PROMPTS, TEMPERATURES, range(TRIALS))
    ]
    results = run_multiple(
        specs, parallel=4, db=args.db,
        retries=4, retry_on=(RateLimitError,), retry_delay=0.02,
        rate_limit="200/s", max_consecutive_failures=5,
    )
    print("statuses:", dict(sorted(collections.Counter(r.status for r in results).items())))
    by_condition = collections.defaultdict(list)
    for result in results:
        if result.status == "completed":
            value = result.result
            by_condition[(value["prompt"], value["temperature"])].append(value["correct"])
    for (prompt, temperature), scores in sorted(by_condition.items()):
        print(f"{prompt:>7} T={temperature:<4} accuracy {statistics.mean(scores):.2f} "
              f"over {len(scores)} trials")
    failed = [r for r in results if r.status == "failed"]
    if failed:
        print(f"first failure: {failed[0].error_message.splitlines()[0]}")


if __name__ == "__main__":
    main()
