"""The model machine of tests/test_model.py on the files backend, with power losses.

A power loss is simulated through the recording FileIO: at a moment between two calls,
the vault's directory is replaced by one crash state of everything recorded since the
last power loss (volatile operations dropped, kept, torn), chosen by Hypothesis. Every
call had returned, so every one of them was acknowledged: the vault must still hold
the model's history exactly, whichever state the disk kept.
"""

from __future__ import annotations

import pytest
from diskmodel import Policy, Recording, RecordingFileIO
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule, run_state_machine_as_test

import statevault
from test_model import POLICY, VaultModel

LOSS = Policy(exhaustive_up_to=4, random_subsets=8)


class FilesPowerLossModel(VaultModel):
    kind = "files"

    def connect(self) -> statevault.Vault:
        if not hasattr(self, "io"):
            self.generation = 0
            self.io = RecordingFileIO(str(self.dir))
        return statevault.open(self.url, policy=POLICY, fileio=self.io)

    @precondition(lambda self: hasattr(self, "io"))
    @rule(data=st.data())
    def power_loss(self, data: st.DataObject) -> None:
        recording = Recording(self.io)
        states = list(recording.states(len(recording.ops), LOSS))
        # An index, not sampled_from(states): how many states there are varies between
        # runs (record sizes hold timestamps, so tears fall elsewhere), and Hypothesis
        # needs each run to draw alike. Shrinks towards state 0, the process crash.
        index = data.draw(st.integers(0, 1 << 16), label="which state the disk kept")
        state = states[index % len(states)]
        image = recording.image(state)
        self.vault.close()
        self.generation += 1
        root = self.dir / f"after-loss-{self.generation}"
        image.materialize(str(root))
        self.io = RecordingFileIO(str(root), start=image)
        self.url = f"files://{root / 'v'}"
        self.vault = self.connect()
        self.stale.clear()


TestFilesPowerLoss = settings(max_examples=60, stateful_step_count=30, deadline=None)(
    FilesPowerLossModel
).TestCase


@pytest.mark.slow
def test_power_losses_thoroughly() -> None:
    run_state_machine_as_test(
        FilesPowerLossModel,
        settings=settings(max_examples=1000, stateful_step_count=50, deadline=None),
    )
