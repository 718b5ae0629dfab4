"""DeCo Inspector: visual quality inspection with diffusion anomaly detectors.

    python main.py                      open the inspector on the bundled demo
    python main.py inspect PATH...      inspect images, folders or videos without a window
    python main.py station --recipe R   a headless station on the line: camera, trigger, engine, outputs
    python main.py outputs              what waits for the line outputs (the outbox)
    python main.py audit verify|list    check or print the audit trail (who changed what, hash-chained)
    python main.py report --from D --to D --pdf FILE
                                        a shift or date-range report (PDF, HTML) without a window
    python main.py train ...            train a DeCo-Diff model (same as torchrun -m training.train_deco_diff)
    python main.py train-vae ...        train the compact VAE
    python main.py train-classifier ... train the category classifier
    python main.py evaluate ...         measure a model on a test split (AUROC, AUPRO, ...)
    python main.py calibrate-scores ... per-category score scales from good images
    python main.py fit --data-dir D --out M [--time-budget 45m]
                                        the whole recipe: train, select, normalize, threshold, evaluate
    python main.py normalize-maps ...   anomaly-map normalization from held-out good images

Like the Python interpreter, `main.py -m MODULE ARGS...` runs a module as __main__: the
PyInstaller bundle uses this to start `torch.distributed.run` and the training entry points
(training/launch.py builds those command lines).
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import sys

from engine.version import __version__

# subcommand -> (module whose main(argv) runs it, one-line help)
DELEGATED = {
    "train": ("training.train_deco_diff", "train a DeCo-Diff model from good images"),
    "train-diad": ("training.train_diad", "train a DiAD model from good images"),
    "train-vae": ("training.train_vae", "train the compact VAE (or fine-tune a Stable-Diffusion VAE)"),
    "train-classifier": ("training.train_classifier", "train the category classifier"),
    "evaluate": ("training.evaluate", "evaluate a model on a test split"),
    "calibrate-scores": ("training.calibrate_scores", "per-category score scales from good images (one threshold for all)"),
    "fit": ("training.fit", "the whole recipe: good images in, a calibrated model folder out, within a time budget"),
    "normalize-maps": ("training.normalize_maps", "fit a model's anomaly-map normalization on held-out good images"),
    "calibrate-runtime": ("training.calibrate_runtime",
                          "int8 calibration images for the OpenVINO runtime, and a check of every runtime / precision"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deco-inspector", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"DeCo Inspector {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    gui = sub.add_parser("gui", help="open the inspector window (the default)")
    gui.add_argument("--model", default=None, help="model folder or reference checkpoint to open with")
    gui.add_argument("--source", default=None, help="folder, image, video or camera index to open with")
    from inspector.headless import add_inspect_arguments

    inspect = sub.add_parser("inspect", help="inspect images, folders or videos without a window",
                             description="Inspect images, folders (recursively) or videos without a window. "
                                         "Exit code 0: all pass; 1: some fail; 2: errors.")
    add_inspect_arguments(inspect)
    from inspector.station import add_station_arguments

    station = sub.add_parser("station", help="run a headless station on the line (no window)",
                             description="A headless inspection station: source + trigger + engine + outputs "
                                         "(MQTT, webhook, PostgreSQL, Modbus TCP, OPC UA). Status lines on stdout; "
                                         "SIGTERM or Ctrl+C stops it cleanly.")
    add_station_arguments(station)
    from lineio.cli import add_outbox_arguments

    outputs = sub.add_parser("outputs", help="what waits for the line outputs (the outbox); retry rejected messages",
                             description="Each line output's queue in the outbox: pending, sent and rejected "
                                         "messages, the oldest pending one and the last error.")
    add_outbox_arguments(outputs)
    from inspector.records_cli import add_audit_arguments, add_report_arguments

    audit = sub.add_parser("audit", help="verify or list the audit trail of the results log",
                           description="The audit trail: every change of thresholds, ROI, model, recipes, calibration, "
                                       "users and every false-call mark. verify checks the hash chain (exit code 1 when "
                                       "a row was edited, deleted or inserted); list prints the entries.")
    add_audit_arguments(audit)
    report = sub.add_parser("report", help="a shift or date-range report as PDF / HTML",
                            description="Counts, yield, charts, the worst parts and the audit entries of a period.")
    add_report_arguments(report)
    for name, (_, text) in DELEGATED.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from training.launch import run_python_style

    code = run_python_style(argv)
    if code is not None:
        return code
    if argv and argv[0] in DELEGATED:
        module = importlib.import_module(DELEGATED[argv[0]][0])
        return int(module.main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    if args.command == "inspect":
        from inspector.headless import run_inspect

        return run_inspect(args)
    if args.command == "station":
        from inspector.station import run_station

        return run_station(args)
    if args.command in ("audit", "report"):
        from inspector.records_cli import run_audit, run_report

        return (run_audit if args.command == "audit" else run_report)(args)
    if args.command == "outputs":
        from inspector.paths import user_data_dir
        from inspector.station import RESULTS_LOG_FILE
        from lineio.cli import run_outbox_report

        return run_outbox_report(args, user_data_dir() / RESULTS_LOG_FILE, sys.stdout, sys.stderr)
    from inspector.startup import EXIT_NO_SCREEN, import_problem, screen_problem

    problem = screen_problem()
    if problem is None:
        try:
            from inspector.app import run_app
        except ImportError as e:  # a system library that PySide6's GUI modules need is missing
            problem = import_problem(e)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_NO_SCREEN
    return run_app(model=getattr(args, "model", None), source=getattr(args, "source", None))


if __name__ == "__main__":
    multiprocessing.freeze_support()  # a frozen bundle's multiprocessing children start here
    sys.exit(main())
