"""Deterministic workflow-state payloads for the benchmarks.

`typical_state` builds the kind of value a workflow engine checkpoints: a header, run
variables, and a list of steps, each with ids, timestamps, numbers, small nested dicts,
a few English-like chat messages and a handful of event dicts. The text is drawn from
a fixed word list, so it compresses like prose with a small vocabulary (somewhat better
than real prose; see docs/performance.md). Sizes are measured as JSON (msgspec.json,
datetimes as ISO strings), the yardstick of the targets.

Most timestamps are ISO strings, as state that went through JSON holds them; about one
in ten is a real `datetime`, as state built in Python holds them. Each step carries two
(`started_at`, `updated_at`), and those reach statevault's extension-type hook, which
is part of what a save of such state costs.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import msgspec

_VOCABULARY = """
    a able about above accept account across action activity actually add address after
    again against agent ago agree ahead allow almost alone along already also although always
    amount analysis and another answer any anyone apply approach approve area argue around
    arrive article ask attempt available avoid away back balance batch because become before
    begin behind believe below best better between beyond bill billing both break bring budget
    build business but buy cache call can cancel capture card care carry case cause certain
    change charge check choose claim clear client close code collect come common complete
    confirm consider contain context continue contract control cost could country course
    create credit current customer data deal decide default deliver delivery depend describe
    design detail determine develop different discount discuss document down draft during
    each early easy effort either else email end enough ensure error estimate even event
    every exactly example expect explain export fail fall far feature fee field file final
    find first fix follow for form forward from full fund further get give goal good group
    handle happen have help high hold however idea include increase input inside instead
    invoice issue item job just keep key kind know large last late later lead least leave
    less level limit line list little load local long look low main make manage many match
    may measure member message method might model month more most move much must need never
    new next note notice number offer often once only open option order other output over
    own page part pass pay payment pending people period place plan point policy possible
    prepare price prior process product provide public pull query question queue quite rate
    reach read ready reason receive record reduce refund region release remain report request
    require resolve response result retry return review right risk rule run same save schedule
    search second section see send service set share ship shipment should show sign since
    small some source split start state status step still stock store summary supplier
    support sure system table take task team tell than that the their then there these they
    thing think this those through ticket time today token tool total track transfer try turn
    under until update upon use user usually validate value vendor verify very wait want
    warehouse week well what when where whether which while will with within without work
    worker would write year yet your
"""
WORDS = tuple(_VOCABULARY.split())
STATUSES = ("pending", "running", "completed", "failed", "retrying", "cancelled", "skipped")
ROLES = ("user", "assistant", "tool", "system")
EVENT_KINDS = ("queued", "started", "heartbeat", "progress", "completed", "failed", "signal")
MODELS = ("fast-1", "balanced-2", "deep-3")
REGIONS = ("us-east", "us-west", "eu-central", "ap-southeast")
TEAMS = ("checkout", "payments", "fulfilment", "support", "platform")
EPOCH = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)

_json = msgspec.json.Encoder()


def json_size(value: Any) -> int:
    """Bytes of `value` as compact JSON (datetimes as ISO 8601 strings)."""
    return len(_json.encode(value))


class _Gen:
    """The random choices behind one state; every value comes from one seeded stream."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def uid(self) -> str:
        h = f"{self.r.getrandbits(128):032x}"
        variant = "89ab"[int(h[16], 16) & 3]
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"

    def short_id(self, prefix: str) -> str:
        return f"{prefix}_{self.r.getrandbits(40):010x}"

    def when(self) -> dt.datetime:
        # Whole microseconds, so the value round-trips exactly through every codec.
        return EPOCH + dt.timedelta(microseconds=self.r.randrange(90 * 86_400 * 10**6))

    def iso(self) -> str:
        return self.when().isoformat()

    def words(self, n: int) -> str:
        return " ".join(self.r.choices(WORDS, k=n))

    def text(self, chars: int) -> str:
        """Sentences of 5-20 words until about `chars` characters."""
        sentences: list[str] = []
        total = 0
        while total < chars:
            s = self.words(self.r.randint(5, 20))
            s = s[0].upper() + s[1:] + self.r.choice("...........?!")
            sentences.append(s)
            total += len(s) + 1
        return " ".join(sentences)

    def event(self, seq: int) -> dict[str, Any]:
        r = self.r
        return {
            "seq": seq,
            "kind": r.choice(EVENT_KINDS),
            "at": self.iso(),
            "detail": {
                "worker": f"worker-{r.randrange(48)}",
                "latency_ms": round(r.expovariate(1 / 40), 3),
                "ok": r.random() < 0.93,
                "attempt": r.randint(1, 4),
            },
        }

    def message(self) -> dict[str, Any]:
        r = self.r
        return {
            "id": self.short_id("msg"),
            "role": r.choice(ROLES),
            "content": self.text(r.randint(200, 2400)),
            "created_at": self.iso(),
            "tokens": r.randint(20, 900),
        }

    def step(self, index: int) -> dict[str, Any]:
        r = self.r
        started = self.when()
        finished = (
            (started + dt.timedelta(milliseconds=r.randint(5, 600_000))).isoformat()
            if r.random() < 0.85
            else None
        )
        return {
            "id": self.uid(),
            "index": index,
            "name": f"{r.choice(WORDS)}_{r.choice(WORDS)}",
            "status": r.choice(STATUSES),
            "attempt": r.randint(1, 5),
            "started_at": started,
            "updated_at": self.when(),
            "finished_at": finished,
            "duration_ms": round(r.uniform(0.2, 120_000.0), 3),
            "inputs": {
                "model": r.choice(MODELS),
                "temperature": round(r.random(), 2),
                "max_tokens": r.choice((256, 512, 1024, 2048, 8192)),
                "tags": r.sample(WORDS, r.randint(1, 5)),
                "customer_id": self.short_id("cus"),
                "amount_cents": r.randint(0, 500_000),
            },
            "outputs": {
                "score": r.random(),
                "tokens": r.randint(1, 6000),
                "finish_reason": r.choice(("stop", "length", "tool_calls")),
                "summary": self.text(r.randint(40, 200)),
                "scores": [round(r.random(), 4) for _ in range(r.randint(2, 6))],
            },
            "messages": [self.message() for _ in range(r.randint(1, 3))],
            "events": [self.event(seq) for seq in range(r.randint(3, 9))],
            "metadata": {
                "trace_id": f"{r.getrandbits(64):016x}",
                "parent_id": self.uid() if r.random() < 0.4 else None,
                "region": r.choice(REGIONS),
                "labels": {"team": r.choice(TEAMS), "priority": r.randint(0, 9)},
                "retries": r.randint(0, 3),
            },
        }


def typical_state(target_bytes: int, *, seed: int = 1) -> dict[str, Any]:
    """A workflow state whose JSON encoding is about `target_bytes` long.

    Deterministic for a given (target_bytes, seed). Steps are added until the JSON
    size reaches the target, so the result overshoots by at most one step (~8 KB).

    Example:
        >>> s = typical_state(200_000, seed=3)
        >>> 200_000 <= json_size(s) < 215_000
        True
    """
    g = _Gen(seed)
    r = g.r
    state: dict[str, Any] = {
        "schema": 3,
        "workflow": {
            "id": g.uid(),
            "name": "order-fulfilment",
            "version": "2025.03.1",
            "created_at": g.when(),
            "owner": g.short_id("usr"),
        },
        "status": "running",
        "variables": {
            f"{r.choice(WORDS)}_{k}": (r.randint(0, 10**9), round(r.random() * 1e4, 2), g.words(3))[
                k % 3
            ]
            for k in range(48)
        },
        "cursor": {"step": 0, "checkpoint": g.uid(), "updated_at": g.iso()},
        "steps": [],
    }
    steps: list[dict[str, Any]] = state["steps"]
    size = json_size(state)
    while size < target_bytes:
        step = g.step(len(steps))
        steps.append(step)
        size += json_size(step) + (1 if len(steps) > 1 else 0)  # + the separating comma
    state["cursor"]["step"] = len(steps)  # a few digits more than the running count
    return state


def small_state(i: int, *, seed: int = 7) -> dict[str, Any]:
    """A few-hundred-byte state, different for every `i` (a progress checkpoint)."""
    g = _Gen(seed * 1_000_003 + i)
    r = g.r
    return {
        "step": i,
        "status": r.choice(STATUSES),
        "cursor": g.uid(),
        "updated_at": g.when(),
        "attempt": r.randint(1, 3),
        "counters": {"done": i, "failed": r.randint(0, 5), "retried": r.randint(0, 9)},
        "last_event": g.event(i),
        "note": g.text(80),
    }


def chat_messages(n: int, *, chars: int = 2048, seed: int = 11) -> list[dict[str, Any]]:
    """`n` chat messages, each with about `chars` characters of English-like text.

    The text is the same word-list prose as `typical_state`'s messages: sentences until
    about `chars` characters (2,047-2,178 for 1000 messages of the default 2048, about
    2,157 B of JSON each with the other fields). Deterministic for a given
    (n, chars, seed); roles alternate user / assistant.
    """
    g = _Gen(seed)
    return [
        {
            "id": g.short_id("msg"),
            "role": ROLES[i % 2],
            "content": g.text(chars),
            "tokens": g.r.randint(300, 700),
        }
        for i in range(n)
    ]
