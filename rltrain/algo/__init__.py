"""Pure algorithm pieces: advantages, losses, logprob math."""
