"""Coding agents behind one interface (backend.py): the Codegen API (codegen.py) and a local command
run in the validation sandbox (local_backend.py). The run's state machine is machine.py (pure), its prompts
prompts.py (pure); pipeline/agents/service.py is the I/O shell that drives them with jobs, one step's
I/O at a time (step.py); availability.py says whether a project can start a run."""

from pipeline.agents.backend import (AgentBackend, AgentError, AgentStatus, AgentTarget, Handle, Mode,
                                     backend_problem)

__all__ = ["AgentBackend", "AgentError", "AgentStatus", "AgentTarget", "Handle", "Mode", "backend_problem"]
