#include "proto/status.h"

namespace coilgun {

const char* code_name(Code code) {
  switch (code) {
    case Code::kOk:
      return "ok";
    case Code::kMalformed:
      return "malformed";
    case Code::kTooLarge:
      return "too_large";
    case Code::kUnsupported:
      return "unsupported";
    case Code::kBaseNotHeld:
      return "base_not_held";
    case Code::kCorrupt:
      return "corrupt";
    case Code::kIdMismatch:
      return "id_mismatch";
    case Code::kProtocol:
      return "protocol";
    case Code::kNotFound:
      return "not_found";
    case Code::kClosed:
      return "closed";
    case Code::kTimeout:
      return "timeout";
    case Code::kRefused:
      return "refused";
    case Code::kIo:
      return "io";
    case Code::kTls:
      return "tls";
    case Code::kConfig:
      return "config";
    case Code::kInternal:
      return "internal";
  }
  return "unknown";
}

std::string Status::to_string() const {
  if (ok()) return "ok";
  std::string s = code_name(code_);
  s += ": ";
  s += message_;
  return s;
}

}  // namespace coilgun
