"""Workflows: signatures, chains and groups (see docs/workflows.md)."""

from django_jobs.flows.handle import FlowHandle, FlowMember, FlowNotFound
from django_jobs.flows.nodes import chain, group
from django_jobs.flows.results import FlowResults
from django_jobs.flows.signature import Signature

__all__ = [
    "FlowHandle",
    "FlowMember",
    "FlowNotFound",
    "FlowResults",
    "Signature",
    "chain",
    "group",
]
