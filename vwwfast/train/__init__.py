"""Training: the KD recipe (losses), one student's state, the loop over several, the commands."""
