"""The ``serve`` and ``query`` subcommands, and the demo's serving step.

``tfrec_onerec.cli`` registers the subcommands with :func:`add_subcommands`::

    tfrec-onerec serve --model-base saved_models [--port 8500] [--rest-port 8501]
    tfrec-onerec query --model din --user 1 --top-k 5 [--server localhost:8500]

``python -m tfrec_onerec.serving serve ...`` runs the same commands. This module imports
grpc, TensorFlow and the data sets only inside the commands, so registering them is light.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

DEFAULT_USERS = (1, 405, 655)


def add_subcommands(subparsers) -> None:
    """Adds ``serve`` and ``query`` to an argparse subparsers object."""
    from tfrec_onerec.serving.server import DEFAULT_MAX_REQUEST_BYTES, GRPC_TRANSPORTS

    p = subparsers.add_parser("serve", help="serve SavedModels over TF Serving's gRPC and REST API",
                              description="Serve every model under --model-base (TF Serving's layout "
                                          "<base>/<model>/<version>/) or those of a models.config, latest "
                                          "version first; new versions are picked up while serving.")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model-base", default=None, help="folder of models (default: saved_models)")
    source.add_argument("--model-config-file", help="a TF Serving models.config (ModelServerConfig text proto)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8500, help="gRPC port (0: any free port)")
    p.add_argument("--rest-port", type=int, default=8501, help="REST port (0: any free port)")
    p.add_argument("--no-rest", action="store_true", help="serve gRPC only")
    p.add_argument("--poll-interval", type=float, default=1.0,
                   help="seconds between looks for new model versions (0: never)")
    p.add_argument("--max-workers", type=int, help="threads serving requests (default: 4 per core, 8..64)")
    p.add_argument("--max-concurrent-rpcs", type=int,
                   help="requests running or queued at most; beyond, RESOURCE_EXHAUSTED (default 4 x workers)")
    p.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                   help="largest request accepted (default 64 MiB)")
    p.add_argument("--grace-period", type=float, default=10.0,
                   help="seconds requests in flight get to finish on shutdown")
    p.add_argument("--no-warmup", action="store_true", help="do not replay assets.extra warmup requests")
    p.add_argument("--allow-reload-config", action="store_true",
                   help="answer ModelService.HandleReloadConfigRequest (off by default: anyone reaching the port "
                        "could repoint the server)")
    p.add_argument("--model-root", action="append", default=None,
                   help="a directory reloaded configs may serve from; repeatable (default: --model-base, or the "
                        "folders holding the models of --model-config-file)")
    p.add_argument("--model-config-file-poll-wait-seconds", type=float, default=0.0,
                   help="seconds between re-reads of --model-config-file (0: read once at start)")
    p.add_argument("--fail-on-load-error", action="store_true",
                   help="exit at start if a model has no version that loads")
    p.add_argument("--max-load-retries", type=int, default=5,
                   help="retries of a version that failed to load (default 5, as TF Serving)")
    p.add_argument("--load-retry-interval", type=float, default=60.0,
                   help="seconds before the first retry of a failed load, doubling after each (default 60)")
    p.add_argument("--grpc-transport", choices=GRPC_TRANSPORTS, default="async",
                   help="async (default): each request received whole on an event loop within 30 s, a byte budget; "
                        "threaded: about 0.3 ms less per call, for ports only trusted clients or a buffering "
                        "proxy reach")
    p.add_argument("--enable-batching", action="store_true",
                   help="merge concurrent requests into one model call (TF Serving's server-side batching)")
    p.add_argument("--batching-parameters-file", default=None,
                   help="TF Serving's batching_parameters.txt (default with --enable-batching: TF Serving's defaults)")
    p.add_argument("--monitoring-config-file",
                   help="a TF Serving monitoring.config: with prometheus_config enabled, the REST port serves "
                        "Prometheus metrics at its path (TF Serving's metric names)")
    p.set_defaults(func=cmd_serve)

    p = subparsers.add_parser("query", help="ask a serving endpoint for a MovieLens user's recommendations",
                              description="Scores every movie a MovieLens-100K user has not rated over gRPC "
                                          "and prints the top K.")
    p.add_argument("--model", required=True, help="the served model's name, e.g. din")
    p.add_argument("--user", type=int, action="append", required=True, help="user id (1..943); repeatable")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--server", default="localhost:8500", help="host:port of the gRPC endpoint")
    p.add_argument("--model-base", default="saved_models",
                   help="where the export's feature_spec.json is read (<base>/<model>/<version>/assets.extra/)")
    p.add_argument("--signature", default="serving_default",
                   help="serving_default (tf.Example, built from the spec) or predict (named tensors)")
    p.add_argument("--task", default="click", help="the output ranked by")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    p.add_argument("--data-path", default=None, help="offline copy of the MovieLens source (the recbole wheel)")
    p.set_defaults(func=cmd_query)


def cmd_serve(args):
    from tfrec_onerec.serving.server import serve

    if args.batching_parameters_file and not args.enable_batching:
        raise SystemExit("tfrec-onerec serve: --batching-parameters-file needs --enable-batching (as in TF Serving).")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    source = ({"model_config_file": args.model_config_file} if args.model_config_file
              else {"model_base": args.model_base or "saved_models"})

    def announce(server):
        rest = f", REST on {server.host}:{server.rest_port}" if server.rest_port else ""
        print(f"Serving {', '.join(server.manager.model_names) or 'no models yet'}: "
              f"gRPC on {server.host}:{server.port}{rest}", flush=True)

    serve(**source, host=args.host, port=args.port, rest_port=None if args.no_rest else args.rest_port,
          poll_interval_s=args.poll_interval, max_workers=args.max_workers,
          max_concurrent_rpcs=args.max_concurrent_rpcs, max_request_bytes=args.max_request_bytes,
          warmup=not args.no_warmup, grace_s=args.grace_period, allow_reload_config=args.allow_reload_config,
          model_roots=args.model_root, monitoring_config_file=args.monitoring_config_file,
          config_poll_interval_s=args.model_config_file_poll_wait_seconds, fail_on_load_error=args.fail_on_load_error,
          max_load_retries=args.max_load_retries, load_retry_interval_s=args.load_retry_interval,
          batching=(args.batching_parameters_file or True) if args.enable_batching else None,
          grpc_transport=args.grpc_transport, on_start=announce)


def top_k(items, scores, k: int):
    """The `k` highest-scoring items, best first (ties: the earlier item).

    Args:
        items: (n,) item ids.
        scores: (n,) or (n, 1) scores.

    Returns:
        ``(items (k,), scores (k,))``.
    """
    import numpy as np

    scores = np.asarray(scores).reshape(-1)
    best = np.argsort(-scores, kind="stable")[:k]
    return np.asarray(items)[best], scores[best]


def recommend(client, tables, user_id: int, top_k_items: int, task: str = "click",
              signature: str = "serving_default"):
    """A user's top unrated movies, scored by the served model.

    Returns:
        ``(item ids (k,), scores (k,))``.
    """
    from tfrec_onerec.data import movielens

    max_len = client.spec["hist_item_id"].max_len if client.spec is not None else _served_max_len(client)
    columns = movielens.candidate_columns(tables, user_id, max_len)
    scores = client.predict(columns, signature=signature, output_filter=[task])[task]
    return top_k(columns["item_id"], scores, top_k_items)


def _served_max_len(client) -> int:
    """The history length of the served `predict` signature (when no spec is at hand)."""
    shape = client.signature_def("predict").inputs["hist_item_id"].tensor_shape
    return shape.dim[1].size


def print_recommendations(tables, user_id: int, items, scores, indent: str = "   "):
    titles = dict(zip(tables.items["item_id"], tables.items["title"]))
    years = dict(zip(tables.items["item_id"], tables.items["year"]))
    print(f"{indent}user {user_id}:")
    for rank, (item, score) in enumerate(zip(items, scores), 1):
        print(f"{indent}   {rank}. {titles[item]} ({years[item]})  score {score:.3f}")


def cmd_query(args):
    from tfrec_onerec.data import movielens
    from tfrec_onerec.serving.client import Client, spec_of_export

    export_dir = Path(args.model_base) / args.model
    spec = spec_of_export(export_dir) if export_dir.is_dir() else None
    if spec is None and args.signature == "serving_default":
        raise SystemExit(f"tfrec-onerec: no export at {export_dir} to read the feature spec from; pass "
                         "--model-base, or --signature predict (named tensors need no spec).")
    tables = movielens.load_movielens_100k(args.data_path)
    results = {}
    with Client(args.server, args.model, spec=spec, timeout_s=args.timeout) as client:
        for user_id in args.user:
            if user_id not in set(tables.users["user_id"]):
                raise SystemExit(f"tfrec-onerec: unknown user {user_id}; MovieLens-100K users are "
                                 f"1..{tables.num_users}.")
            items, scores = recommend(client, tables, user_id, args.top_k, args.task, args.signature)
            print_recommendations(tables, user_id, items, scores, indent="")
            results[user_id] = (items, scores)
    return results


def demo_query(model_base: str = "saved_models", model_name: str = "din", user_ids=DEFAULT_USERS,
               top_k_items: int = 5, tables=None) -> dict:
    """The demo's last step: serve `model_base`, ask for recommendations over gRPC, shut down.

    Starts a :class:`~tfrec_onerec.serving.server.Server` on free loopback ports, builds
    tf.Example requests from the export's feature spec, prints each user's top movies and
    stops the server gracefully.

    Args:
        model_base: the folder of models (TF Serving's layout).
        model_name: the model asked.
        user_ids: MovieLens-100K users.
        top_k_items: movies per user.
        tables: the loaded MovieLens tables (default: loaded here).

    Returns:
        ``{user id: (item ids (k,), scores (k,))}``.
    """
    from tfrec_onerec.data import movielens
    from tfrec_onerec.serving.client import Client, spec_of_export
    from tfrec_onerec.serving.server import Server

    tables = tables if tables is not None else movielens.load_movielens_100k()
    spec = spec_of_export(Path(model_base) / model_name)
    results = {}
    with Server(model_base, port=0, rest_port=0) as server:
        print(f"   serving {', '.join(server.manager.model_names)} on gRPC {server.target} "
              f"(REST on port {server.rest_port}); version(s) of {model_name}: "
              f"{server.manager.served_versions(model_name)}")
        with Client(server.target, model_name, spec=spec) as client:
            for user_id in user_ids:
                items, scores = recommend(client, tables, user_id, top_k_items)
                print_recommendations(tables, user_id, items, scores)
                results[user_id] = (items, scores)
    print("   server stopped (in-flight requests finished, models unloaded)")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tfrec_onerec.serving",
                                     description="TF Serving's API over exported SavedModels.")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
