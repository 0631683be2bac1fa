"""The `ubsafe` command line. Subcommands load on first use: `--help`, `--version` are instant."""

from __future__ import annotations

import importlib

import click

import ubsafe

#: command name → "module:attribute" (the module is imported only when the command runs)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("ubsafe.cli.data:data", "Make, check and fetch datasets."),
    "weights": (
        "ubsafe.cli.weights:weights",
        "Fetch encoder and classifier weights for offline nodes.",
    ),
    "plan": ("ubsafe.cli.pipeline:plan", "Validate a dataset and assign its samples to shards."),
    "run": ("ubsafe.cli.pipeline:run", "Run a stage on this machine (missing shards only)."),
    "submit": ("ubsafe.cli.submit:submit", "Submit a stage to Slurm as array jobs (via submitit)."),
    "status": (
        "ubsafe.cli.status:status",
        "Show per stage which shards are done, running, failed or missing.",
    ),
    "reduce": (
        "ubsafe.cli.pipeline:reduce",
        "Merge shard outputs into results/ with confidence intervals.",
    ),
    "report": (
        "ubsafe.cli.report:report",
        "Render tables and figures from results/ of one or more runs.",
    ),
    "demo": ("ubsafe.cli.pipeline:demo", "The main job on the embedded demo data, end to end."),
    "classifiers": ("ubsafe.cli.registry:classifiers", "List the classifier registry."),
    "encoders": ("ubsafe.cli.registry:encoders", "List the encoder registry."),
    "perturbations": ("ubsafe.cli.registry:perturbations", "List the perturbations."),
    "generators": ("ubsafe.cli.registry:generators", "List the text-to-image generators."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attribute = COMMANDS[cmd_name][0].split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> object:
        from ubsafe.cli.common import expected_errors

        try:
            return super().invoke(ctx)
        except expected_errors() as exc:
            from ubsafe.escape import terminal
            from ubsafe.redact import redact

            raise click.ClickException(terminal(redact(str(exc)))) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table above: listing commands must not import them.
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_text) for name, (_, help_text) in COMMANDS.items()])
        from ubsafe.targets import TARGETS

        with formatter.section("Targets (ubsafe run|submit TARGET)"):
            formatter.write_dl([(t.name, t.summary) for t in TARGETS.values()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(ubsafe.__version__, prog_name="ubsafe")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="More log output on the terminal: -v every INFO record (libraries too), -vv DEBUG.",
)
def main(verbose: int) -> None:
    """ubsafe: benchmark image safety classifiers for effectiveness and robustness,
    on real-world and AI-generated images, locally or on a Slurm cluster.

    \b
    Start here:
      ubsafe demo                                   the whole pipeline on generated data
      ubsafe data check DATASET                     validate a dataset
      ubsafe run effectiveness DATASET --out RUN    F1 & co. with confidence intervals
      ubsafe submit robustness DATASET --out RUN --partition gpu
      ubsafe report RUN
    """
    from ubsafe.logs import configure

    configure(verbose)
