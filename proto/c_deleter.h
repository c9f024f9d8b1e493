#pragma once
// CDeleter: lets std::unique_ptr own objects from C libraries (zstd, OpenSSL, libuv requests).
//
//   std::unique_ptr<ZSTD_CCtx, CDeleter<ZSTD_freeCCtx>> cctx{ZSTD_createCCtx()};

namespace coilgun {

template <auto F>
struct CDeleter {
  void operator()(auto* p) const noexcept { F(p); }
};

}  // namespace coilgun
