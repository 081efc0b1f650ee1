"""autopack's wire protocol and run spec. Imports nothing else of autopack."""

from ._classification import Classification as Classification
from ._classification import ClassifyContext as ClassifyContext
from ._classification import Mitigation as Mitigation
from ._errors import AutopackError as AutopackError
from ._errors import ErrorCode as ErrorCode
from ._errors import FrameTooLarge as FrameTooLarge
from ._errors import InvalidRequest as InvalidRequest
from ._errors import ProtocolError as ProtocolError
from ._errors import RemoteError as RemoteError
from ._errors import SpecError as SpecError
from ._errors import StorageError as StorageError
from ._framing import DEFAULT_MAX_FRAME as DEFAULT_MAX_FRAME
from ._framing import FrameBuffer as FrameBuffer
from ._framing import decode_reply as decode_reply
from ._framing import decode_request as decode_request
from ._framing import encode_frame as encode_frame
from ._framing import recv_frame_blocking as recv_frame_blocking
from ._messages import *  # noqa: F403  (every message class is public)
from ._messages import __all__ as _msg_all
from ._spec import Limits as Limits
from ._spec import PhaseSpec as PhaseSpec
from ._spec import RunSpec as RunSpec
from ._spec import load_spec as load_spec
from ._spec import parse_spec_text as parse_spec_text
from ._spec import run_spec_json_schema as run_spec_json_schema
from ._spec import spec_to_builtins as spec_to_builtins
from ._spec import spec_to_toml as spec_to_toml
from ._spec import validate_spec as validate_spec

__all__ = sorted(
    [
        "Classification", "ClassifyContext", "Mitigation", "AutopackError", "ErrorCode",
        "FrameTooLarge", "InvalidRequest", "ProtocolError", "RemoteError", "SpecError", "StorageError", "DEFAULT_MAX_FRAME",
        "FrameBuffer", "decode_reply", "decode_request", "encode_frame", "recv_frame_blocking",
        "Limits", "PhaseSpec", "RunSpec", "load_spec", "parse_spec_text",
        "run_spec_json_schema", "spec_to_builtins", "spec_to_toml", "validate_spec",
        *_msg_all,
    ]
)
