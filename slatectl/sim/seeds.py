"""The fixed user seeds shared by every evaluation, defined once.

Validation users (checkpoint selection, and the random policy's return that `ckpt promote` compares
validation returns with) and test users (the final report of every checkpoint) come from these seeds,
distinct from any training seed so that an agent is never evaluated on the users it trained on.
"""

VALIDATION_SEED = 1_000_003
TEST_SEED = 2_000_003
