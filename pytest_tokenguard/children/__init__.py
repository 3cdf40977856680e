"""The guard in child processes: what a guarded test starts (``subprocess``, ``multiprocessing``, DataLoader
workers, ``torchrun``, ``accelerate launch``) reports its findings back to that test.

``spool`` is the contract between both sides (environment variables, the session file, one JSON file per
finding); ``parent`` is the pytest session's side (the ``.pth`` file, the environment, draining); ``hook``
runs in the child (started from the ``.pth`` file, or at ``fork`` in a process that was already guarded).
"""
