"""Data stages: JSB chords, FluidSynth note rendering, mel features, the MusicSlots datasets and the multi-stem
audio of the composable-representations side."""

SPLITS = ("train", "valid", "test")  # every dataset's splits, in this order
