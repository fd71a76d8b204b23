"""`srgan registry list` and `srgan registry prune`: the MLflow model registry of this repository
from the command line. Part of the `srgan` command (`srgan.cli` adds it), kept in its own module
so each stays one concern under the house's 330 lines; like the rest of the command, it imports
mlflow only when a registry command runs, so `srgan --help` stays fast.
"""

from __future__ import annotations

import argparse


def add_registry(commands: argparse._SubParsersAction) -> None:
    """Add `srgan registry {list,prune}` to the `srgan` command's parser (`srgan.cli.build_parser`)."""
    from srgan.cli import _positive_int  # the command's own argument types; srgan.cli is loaded by now

    registry = commands.add_parser("registry", help="manage the MLflow model registry of this repository")
    actions = registry.add_subparsers(dest="action", required=True)
    listing = actions.add_parser(
        "list",
        help="every srgan-generator version with its aliases, dvc_exp, commit and its PSNR, SSIM, LPIPS and NIQE "
        "per metric convention and eval set, as the evaluate stage tagged them",
    )
    listing.set_defaults(func=cmd_registry_list)
    prune = actions.add_parser(
        "prune",
        help="delete srgan-generator versions beyond the newest N, except those with an alias, the one that "
        "wrote the current models/*.pt and the one the newest evaluate run measured (runs stay)",
    )
    prune.add_argument("--keep", type=_positive_int, required=True, help="how many of the newest versions to keep")
    prune.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    prune.set_defaults(func=cmd_registry_prune)


def cmd_registry_list(args: argparse.Namespace) -> None:
    """One table of the registered generators and their scores, oldest version first."""
    from srgan.tracking.registry import registry_rows, registry_table
    from srgan.tracking.uris import require_store

    require_store()
    rows = registry_rows()
    if not rows:
        print("srgan-generator: no version registered yet (the train stage registers one per run)")
        return
    print("\n".join(registry_table(rows)))


def cmd_registry_prune(args: argparse.Namespace) -> None:
    """Keep the registry small: delete the generator versions no one points at beyond the newest N."""
    from srgan.cli import _count
    from srgan.core.runtime import project_root
    from srgan.tracking.registry import prune_registry
    from srgan.tracking.uris import require_store

    require_store()
    root = project_root()
    deleted, kept = prune_registry(
        args.keep, [root / "models" / "srgan.pt", root / "models" / "srresnet.pt"], args.dry_run
    )
    verb = "would delete" if args.dry_run else "deleted"
    print(f"srgan-generator: {verb} {_count(len(deleted), 'version')}"
          + (f" ({', '.join(deleted)})" if deleted else "")
          + f"; the newest {args.keep} kept")  # fmt: skip
    for version, reason in kept.items():
        print(f"  kept version {version}: {reason}")
