"""What a Slurm partition can ever run, read from ``scontrol``, and which pending reasons never clear.

Rule (a request no node can satisfy is refused before submission): one job of the sweep asks for
``nodes`` nodes, each holding ``tasks_per_node x cpus_per_task`` CPUs, ``mem_gb`` of memory and
``gpus_per_node`` GPUs, for ``timeout_min`` minutes. It can ever start only if the partition has that
many nodes and one node has all of those at once, within the partition's own caps (``MaxCPUsPerNode``,
``MaxMemPerNode``, ``MaxNodes``, ``MaxTime``). Slurm itself accepts such a job and leaves it pending
forever (``Reason=PartitionConfig``), so ``check_request`` says which knob is over which limit first.

Rule (a pending job that cannot start is not waited on): a pending job whose reason is in
``UNRESOLVABLE`` (a partition or QOS limit, a dependency that can no longer be met, an invalid
account) never starts by waiting; the launcher reports and cancels it. Reasons such as
``Resources``, ``Priority`` or ``JobArrayTaskLimit`` clear by themselves.

The launcher (``slurm_launcher``) refuses the first case before submission and, watching the jobs
(``slurm_watch``), cancels the second.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from .errors import ConfigError

# pending reasons that never clear by waiting, with what they mean
UNRESOLVABLE = {
    "PartitionConfig": "it asks for more than the partition's nodes or limits allow",
    "PartitionNodeLimit": "it asks for more nodes than the partition allows",
    "PartitionTimeLimit": "its time limit is above the partition's MaxTime",
    "BadConstraints": "no node has the requested features",
    "DependencyNeverSatisfied": "its dependency can no longer be satisfied",
    "InvalidAccount": "the account is not valid",
    "InvalidQOS": "the QOS is not valid",
    "AccountNotAllowed": "the partition does not allow the account",
    "QOSNotAllowed": "the partition does not allow the QOS",
    "QOSMaxCpuPerJobLimit": "it asks for more CPUs than the QOS allows",
    "QOSMaxGRESPerJob": "it asks for more GPUs than the QOS allows",
    "QOSMaxMemoryPerJob": "it asks for more memory than the QOS allows",
    "QOSMaxNodePerJobLimit": "it asks for more nodes than the QOS allows",
    "QOSMaxWallDurationPerJobLimit": "its time limit is above the QOS's",
    "AssocMaxCpuPerJobLimit": "it asks for more CPUs than the account allows",
    "AssocMaxGRESPerJob": "it asks for more GPUs than the account allows",
    "AssocMaxMemPerJob": "it asks for more memory than the account allows",
    "AssocMaxNodesPerJobLimit": "it asks for more nodes than the account allows",
    "AssocMaxWallDurationPerJobLimit": "its time limit is above the account's",
}
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
_KEY = re.compile(r"^[A-Za-z][\w:/.]*=")


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    mem_mb: int
    gpus: int


@dataclass(frozen=True)
class Partition:
    name: str
    nodes: tuple[Node, ...]
    max_time_min: float | None = None  # None: unlimited
    max_nodes: int | None = None
    max_cpus_per_node: int | None = None
    max_mem_per_node_mb: int | None = None
    default: bool = False
    state: str = "UP"


@dataclass(frozen=True)
class Request:
    """One job's ask, as the launcher's knobs state it (None: not asked)."""

    cpus_per_task: int | None = None
    tasks_per_node: int = 1
    mem_gb: float | None = None
    gpus_per_node: int | None = None
    timeout_min: float | None = None
    nodes: int = 1


def parse_fields(line: str) -> dict[str, str]:
    """``scontrol show ... -o`` line -> {key: value}; a value may hold spaces (``OS=Linux 6.1 #1 SMP``)."""
    out: dict[str, str] = {}
    key = None
    for token in line.split():
        if _KEY.match(token):
            key, value = token.split("=", 1)
            out[key] = value
        elif key is not None:
            out[key] += " " + token
    return out


def parse_minutes(value: str) -> float | None:
    """Slurm time ``[days-]hours:minutes:seconds`` (or ``minutes``) -> minutes; None for unlimited.

    >>> parse_minutes("06:00:00"), parse_minutes("1-00:30:00"), parse_minutes("UNLIMITED"), parse_minutes("45")
    (360.0, 1470.0, None, 45.0)
    """
    if value.upper() in ("UNLIMITED", "INFINITE", "NONE", ""):
        return None
    days, _, clock = value.rpartition("-")
    parts = [float(p) for p in clock.split(":")]
    if len(parts) == 1:
        minutes = parts[0]
    else:
        parts = [0.0] * (3 - len(parts)) + parts
        minutes = parts[0] * 60 + parts[1] + parts[2] / 60
    return minutes + (float(days) * 1440 if days else 0.0)


def gpu_count(gres: str) -> int:
    """GPUs in a node's ``Gres`` (``gpu:4``, ``gpu:a100:2(S:0-1),gpu:v100:1``, ``(null)``).

    >>> gpu_count("gpu:a100:2(S:0-1),gpu:v100:1,shard:8"), gpu_count("(null)")
    (3, 0)
    """
    total = 0
    for entry in re.split(r",(?![^()]*\))", gres):
        fields = entry.split("(")[0].split(":")
        if fields[0] == "gpu" and fields[-1].isdigit():
            total += int(fields[-1])
    return total


def _int_limit(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def parse_partitions(partition_lines: str, node_lines: str) -> dict[str, Partition]:
    """``scontrol show partition -o`` and ``scontrol show node -o`` outputs -> {name: Partition}."""
    nodes: dict[str, list[Node]] = {}
    for line in node_lines.splitlines():
        f = parse_fields(line)
        if "NodeName" not in f:
            continue
        node = Node(
            f["NodeName"],
            int(f.get("CPUEfctv") or f.get("CPUTot") or 0),
            int(f.get("RealMemory") or 0) - int(f.get("MemSpecLimit") or 0),
            gpu_count(f.get("Gres", "")),
        )
        for p in f.get("Partitions", "").split(","):
            nodes.setdefault(p, []).append(node)
    out = {}
    for line in partition_lines.splitlines():
        f = parse_fields(line)
        if "PartitionName" not in f:
            continue
        name = f["PartitionName"]
        out[name] = Partition(
            name,
            tuple(nodes.get(name, [])),
            parse_minutes(f.get("MaxTime", "UNLIMITED")),
            _int_limit(f.get("MaxNodes")),
            _int_limit(f.get("MaxCPUsPerNode")),
            _int_limit(f.get("MaxMemPerNode")),
            f.get("Default") == "YES",
            f.get("State", "UP"),
        )
    return out


# what the launcher runs: sbatch submits, srun starts the job step (submitit's script), scontrol reads limits
SLURM_TOOLS = ("sbatch", "srun", "scontrol")


def _scontrol(*args: str) -> str:
    return subprocess.run(["scontrol", *args], capture_output=True, text=True, check=True, timeout=60).stdout


def read_partition(name: str | None) -> Partition:
    """The partition a job goes to (``name``, or the cluster's default), read from ``scontrol``."""
    missing = [tool for tool in SLURM_TOOLS if shutil.which(tool) is None]
    if missing:
        raise ConfigError(
            f"hydra/launcher=slurm: no Slurm here ({', '.join(missing)} not on PATH); submit from a login node of "
            "the cluster, or run locally with hydra/launcher=parallel"
        )
    try:
        parts = parse_partitions(_scontrol("show", "partition", "-o"), _scontrol("show", "node", "-o"))
    except subprocess.SubprocessError as e:
        err = (getattr(e, "stderr", "") or str(e)).strip().splitlines()
        raise ConfigError(f"hydra/launcher=slurm: scontrol cannot reach the cluster ({err[0] if err else e})") from None
    if name is None:
        defaults = [p for p in parts.values() if p.default]
        if not defaults:
            raise ConfigError(
                f"hydra.launcher.partition=null: the cluster has no default partition; pick one of {', '.join(parts)}"
            )
        return defaults[0]
    if name not in parts:
        raise ConfigError(f"hydra.launcher.partition={name}: no such partition; valid: {', '.join(parts)}")
    return parts[name]


def check_request(req: Request, part: Partition) -> None:
    """Raise a one-line ConfigError naming the first knob over a limit of ``part`` (module docstring)."""
    where = f"partition {part.name}"
    cpus = (req.cpus_per_task or 1) * req.tasks_per_node
    mem = None if req.mem_gb is None else float(req.mem_gb) * 1024
    gpus = req.gpus_per_node or 0
    max_nodes = min(len(part.nodes), part.max_nodes or len(part.nodes))
    if req.nodes > max_nodes:
        raise ConfigError(f"hydra.launcher.nodes={req.nodes}: {where} allows at most {max_nodes} node(s) per job")
    if req.timeout_min is not None and part.max_time_min is not None and req.timeout_min > part.max_time_min:
        raise ConfigError(
            f"hydra.launcher.timeout_min={req.timeout_min:g}: above {where}'s MaxTime of {part.max_time_min:g} "
            f"minutes; use hydra.launcher.timeout_min<={part.max_time_min:g}"
        )
    top_cpus = min(max((n.cpus for n in part.nodes), default=0), part.max_cpus_per_node or 1 << 30)
    if cpus > top_cpus:
        per = f" (x tasks_per_node={req.tasks_per_node})" if req.tasks_per_node != 1 else ""
        raise ConfigError(
            f"hydra.launcher.cpus_per_task={req.cpus_per_task}{per}: {cpus} CPUs per node, but {where} gives a job "
            f"at most {top_cpus}; use hydra.launcher.cpus_per_task<={top_cpus // req.tasks_per_node}"
        )
    top_mem = min(max((n.mem_mb for n in part.nodes), default=0), part.max_mem_per_node_mb or 1 << 60)
    if mem is not None and mem > top_mem:
        raise ConfigError(
            f"hydra.launcher.mem_gb={req.mem_gb:g}: {where} gives a job at most {top_mem} MB "
            f"({top_mem / 1024:.1f} GB) per node; use hydra.launcher.mem_gb<={int(top_mem // 1024)}"
        )
    top_gpus = max((n.gpus for n in part.nodes), default=0)
    if gpus > top_gpus:
        hint = "0 (no node of it has a GPU)" if top_gpus == 0 else f"<={top_gpus}"
        raise ConfigError(
            f"hydra.launcher.gpus_per_node={gpus}: {where} has at most {top_gpus} GPU(s) per node; "
            f"use hydra.launcher.gpus_per_node={hint}, or a GPU partition (hydra.launcher.partition=...)"
        )
    fits = [n for n in part.nodes if n.cpus >= cpus and (mem is None or n.mem_mb >= mem) and n.gpus >= gpus]
    if len(fits) < req.nodes:
        raise ConfigError(
            f"hydra.launcher.cpus_per_task/mem_gb/gpus_per_node={req.cpus_per_task}/{req.mem_gb}/{gpus}: no "
            f"{req.nodes} node(s) of {where} hold them together (nodes: "
            + ", ".join(f"{n.name} {n.cpus} CPUs {n.mem_mb} MB {n.gpus} GPUs" for n in part.nodes[:4])
            + ")"
        )
