"""lmsmith synth: instruction data written from documents by a teacher model (see lmsmith.synth.stage)."""
