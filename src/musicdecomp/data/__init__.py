"""Data stages: JSB chords, FluidSynth note rendering, mel features and the MusicSlots datasets."""
