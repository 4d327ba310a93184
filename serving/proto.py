"""The service's gRPC Python code: ``pb2``, ``pb2_grpc`` and ``SERVICE_NAME``.

The code is generated from ``protos/`` at build time into ``recsys_serving._generated`` by
``setup.py``'s build hook (see ``recsys_serving.protogen``): a wheel holds it, and
``pip install -e .`` writes it into the git-ignored ``serving/_generated/``. Importing this
module only imports it. In a source checkout it first checks that the code was generated from
the ``.proto`` as it is now, and if not raises :class:`ProtoError` naming the command that
regenerates it (``make install`` does it too), rather than serve an outdated contract.
"""

from __future__ import annotations

from recsys_serving import protogen

REGENERATE = "`make proto` (or `python -m recsys_serving.protogen`) in the source checkout"


class ProtoError(RuntimeError):
    """The service's generated code is missing, or older than the source tree's ``.proto``."""


def check_generated() -> None:
    """ProtoError unless the generated code matches a source checkout's ``.proto``.

    An installed wheel has no ``protos/`` beside it: there is nothing to compare with.
    """
    proto = protogen.SOURCE_PROTO_ROOT / protogen.PROTO_FILE
    generated = protogen.SOURCE_GENERATED_DIR
    if proto.is_file() and not protogen.is_current(protogen.SOURCE_PROTO_ROOT, generated):
        state = "missing" if not generated.is_dir() else f"older than {proto}"
        raise ProtoError(f"{generated}: generated gRPC code {state}; run {REGENERATE}")


check_generated()
try:
    from recsys_serving._generated import recommender_pb2 as pb2
    from recsys_serving._generated import recommender_pb2_grpc as pb2_grpc
except ImportError as exc:
    raise ProtoError(
        f"recsys_serving._generated cannot be imported ({exc}): this install of recsys was not "
        f"built by its setup.py (which generates the gRPC code); reinstall it with pip, or run "
        f"{REGENERATE}"
    ) from exc

SERVICE_NAME: str = pb2.DESCRIPTOR.services_by_name["Recommender"].full_name

__all__ = ["SERVICE_NAME", "ProtoError", "check_generated", "pb2", "pb2_grpc"]
