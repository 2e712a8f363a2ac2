"""The command-line program ``sklearn-npll`` (also ``python -m sklearn_npll``).

From a folder of photos and a list of class names to a model you can ship,
with a report and a list of the photos most worth checking by hand::

    sklearn-npll train photos/ --classes cat,dog,car --out run/
    sklearn-npll predict run/ new_photos/ --out predictions.csv
    sklearn-npll report run/
    sklearn-npll verify run/ --n 50
    sklearn-npll train photos/ --classes cat,dog,car --out run/ --verified run/verify.csv

Every problem with the input (an empty folder, a missing class file,
unreadable images, a RUN folder made for other classes or photos) ends the
program with a one-line message and exit status 1.
"""

import argparse
import os
import sys

from ._cli.console import CLIError

__all__ = ["main", "build_parser"]


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _add_train(commands):
    p = commands.add_parser(
        "train", help="annotate photos with a vision-language model and train Co-Reg",
        description="Propose candidate sets with an open_clip model, train Co-Reg on them "
                    "and write the model, its ONNX export, a summary and a report in RUN. "
                    "Run the same command again after an interruption to continue.")
    p.add_argument("photos", metavar="PHOTOS", help="folder of photos (searched recursively)")
    names = p.add_mutually_exclusive_group(required=True)
    names.add_argument("--classes", help="class names, separated by commas: cat,dog,car")
    names.add_argument("--classes-file", help="text file with one class name per line")
    p.add_argument("--out", required=True, metavar="RUN", help="folder of the outputs")
    p.add_argument("--model", default="ViT-B-32",
                   help="open_clip architecture, or hf-hub:org/repo or local-dir:PATH "
                        "(default: %(default)s)")
    p.add_argument("--pretrained", default="openai",
                   help="open_clip pretrained tag or path of a checkpoint file "
                        "(default: %(default)s)")
    p.add_argument("--model-config", metavar="JSON",
                   help="open_clip config of an architecture open_clip does not know "
                        "(then --model is its file name without .json)")
    p.add_argument("--templates", default="small",
                   choices=["small", "imagenet", "imagenet-simple"], help="prompt templates")
    p.add_argument("--epochs", type=_positive, help="training epochs (default: from the data)")
    p.add_argument("--warmup-epochs", type=int, help="warm-up epochs (default: half)")
    p.add_argument("--batch-size", type=_positive, help="default: from the data")
    p.add_argument("--image-size", type=_positive,
                   help="side of the square training images (default: from the data)")
    p.add_argument("--backbone", default="auto", choices=["auto", "small-cnn", "resnet18"],
                   help="the student's network: auto chooses from the image size (a small "
                        "CNN under 32 px, else PreAct ResNet-18)")
    p.add_argument("--width", type=_positive, default=32,
                   help="channels of the small CNN's first stage (default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--verified", metavar="CSV",
                   help="labels checked by a person: the CSV of verify, label column filled")
    p.add_argument("--on-bad-image", choices=["error", "skip"], default="error",
                   help="stop on unreadable images (listing them) or leave them out")


def _add_others(commands):
    p = commands.add_parser("predict", help="classes of new images (CSV), without the VLM",
                            description="Write file,class,probability for each image.")
    p.add_argument("run", metavar="RUN", help="folder made by train")
    p.add_argument("images", metavar="IMAGES", nargs="+", help="image files or folders")
    p.add_argument("--out", help="CSV file to write (default: standard output)")
    p.add_argument("--onnx", action="store_true", help="predict with model.onnx")
    p.add_argument("--on-bad-image", choices=["error", "skip"], default="error")
    p = commands.add_parser("report", help="write RUN/report.html again")
    p.add_argument("run", metavar="RUN", help="folder made by train")
    p = commands.add_parser(
        "verify", help="CSV of the photos most worth checking by hand",
        description="Photos where the student and the teacher disagree come first, then "
                    "the least confident ones. Fill the label column and pass the file to "
                    "train --verified.")
    p.add_argument("run", metavar="RUN", help="folder made by train")
    p.add_argument("--n", type=_positive, default=50, help="photos to list (default: 50)")
    p.add_argument("--out", help="CSV file (default: RUN/verify.csv)")


def build_parser():
    """The argument parser of ``sklearn-npll``.

    Returns
    -------
    parser : argparse.ArgumentParser
        The parser of every subcommand (train, predict, report, verify).

    Examples
    --------
    >>> from sklearn_npll.cli import build_parser
    >>> args = build_parser().parse_args(["predict", "run", "new_photos", "--onnx"])
    >>> args.command, args.images, args.onnx
    ('predict', ['new_photos'], True)
    """
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="sklearn-npll",
        description="Train an image classifier from a folder of photos and class names, "
                    "with no manual labels: a vision-language model proposes candidate "
                    "sets, Co-Reg learns from them.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(commands)
    _add_others(commands)
    return parser


def _run(args):
    if args.command == "train":
        from ._cli.train import train

        return train(args)
    if args.command == "predict":
        from ._cli.predict import predict

        return predict(args)
    if args.command == "verify":
        from ._cli.verify import verify

        return verify(args)
    from ._cli.outputs import build_report
    from ._cli.run_folder import RunFolder

    run = RunFolder(args.run)
    classes = run.identity()["classes"]
    path = build_report(run, run.load_model(), run.image_paths(), classes, required=True)
    print(f"Wrote {path}", file=sys.stderr)
    return 0


def main(argv=None):
    """Run ``sklearn-npll`` with the arguments ``argv``.

    Parameters
    ----------
    argv : list of str, default=None
        The arguments; None reads ``sys.argv``.

    Returns
    -------
    status : int
        0 on success; 1 on a problem with the input (reported in one line);
        130 when interrupted.

    Examples
    --------
    >>> from sklearn_npll.cli import main
    >>> main(["train", "photos", "--classes", "cat,dog", "--out", "run"])  # doctest: +SKIP
    0
    >>> main(["predict", "run", "new_photos", "--out", "predictions.csv"])  # doctest: +SKIP
    0
    """
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except CLIError as exc:
        print(f"sklearn-npll {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader of stdout stopped early (``| head``): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"sklearn-npll {args.command}: interrupted. Run the same command again to "
              "continue where it stopped.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
