"""The sandbox a user's model file runs in: a child process with limits, talking over a pipe.

This package's __init__ imports nothing: the child (worker.sandbox.child) must start with one
thread, before numpy or torch, to move into a network namespace of its own."""
