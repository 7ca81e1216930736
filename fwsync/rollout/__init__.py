"""`apply --confirm-within`: an apply that puts back what the kernel held unless confirmed.

pending.py keeps the records (the pending change, the last revert), timer.py starts and stops
the timer that reverts, revert.py arms, confirms and reverts."""
