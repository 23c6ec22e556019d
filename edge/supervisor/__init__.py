"""OTP-style supervision for Python threads and processes.

    spec.py        Restart, Strategy, ChildSpec, Exit, the Child protocol
    children.py    ThreadChild, ProcessChild (the two kinds of running child)
    supervisor.py  Supervisor: strategies, restart intensity, escalation, nesting

A nested supervisor is a child like any other: ``ChildSpec("workers", start=sub.start,
kind="supervisor", describe=sub.describe)``.
"""
from edge.supervisor.children import ProcessChild, ThreadChild
from edge.supervisor.spec import NORMAL, Child, ChildSpec, Exit, Restart, Strategy
from edge.supervisor.supervisor import Supervisor

__all__ = ["Supervisor", "ChildSpec", "Child", "Exit", "NORMAL", "Restart", "Strategy", "ThreadChild",
           "ProcessChild"]
