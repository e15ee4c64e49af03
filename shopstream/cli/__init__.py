"""The shopstream command line (composition root)."""
