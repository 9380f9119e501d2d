// Exact nucleus (top-p) threshold per row by radix refinement, one CUDA block per row.
//
// Semantics: those of specattn.select (theta = max{v in a : sum(a_i for a_i >= v) >= p * m}, ties in,
// p = 1 -> the row's smallest key, all-zero rows -> 0). Built and loaded by specattn/kernels/radix.py.
//
// Non-negative floats order like their bit patterns ("keys"). A key k = [8 exponent bits | 23 mantissa
// bits] is refined in three digits: d1 = k >> 20 (2048 bins: exponent + 3 mantissa bits), d2 = bits
// 9..19 (2048 bins), d3 = bits 0..8 (512 bins).
//  1. One pass over the row: float32 shared-memory atomics build an approximate mass per d1 bin (one
//     native atomic per key), the float64 total is summed in registers, and rows of at most kStage
//     keys are staged in shared memory. The bin b1 whose suffix mass crosses p * total is a guess.
//  2. Over the keys: the exact float64 mass of the keys above b1 (registers), and an exact histogram of
//     the keys in b1 by d2 (count << 44 | sum of integer significands: all keys of b1 share one
//     exponent, so a bin's mass is scale * integer, exactly). The guess is verified against the
//     target; a wrong guess (the crossing within float32 rounding of a bin edge) moves b1 to the
//     neighbouring present bin and repeats this step; after kMaxMoves wrong guesses an exact d1
//     histogram (64-bit atomics, slower) decides. The keys of b1 are staged for step 3.
//  3. The same exact histogram by d3 inside the chosen d2 bin gives theta.
// Long rows are read twice (three times when b1 holds more than kStage keys); every decision is taken
// on the device (no host synchronisation; CUDA-graph capturable).
//
// Limits: rows shorter than 2^20 keys (the packed count), non-negative finite inputs.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace {

#ifndef SPECATTN_RADIX_THREADS
#define SPECATTN_RADIX_THREADS 512
#endif
#ifndef SPECATTN_RADIX_UNROLL
#define SPECATTN_RADIX_UNROLL 4
#endif
constexpr int kThreads = SPECATTN_RADIX_THREADS;  // a power of two, 64..1024
constexpr int kUnroll = SPECATTN_RADIX_UNROLL;    // 16-byte loads in flight per thread (x2: prefetch)
constexpr int kWarps = kThreads / 32;
constexpr int kBins = 2048;
constexpr int kStage = 8192;  // keys staged in shared memory (32 KiB)
constexpr int kMaxMoves = 2;  // wrong guesses of b1 moved to a neighbour before the exact d1 fallback
constexpr unsigned long long kCountOne = 1ull << 44;
constexpr unsigned long long kSumMask = kCountOne - 1;
constexpr unsigned kFull = 0xffffffffu;

template <typename T> __device__ __forceinline__ float to_float(T v);
template <> __device__ __forceinline__ float to_float<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

// Integer significand of a key: value = significand * 2^(max(exponent, 1) - 150), exactly.
__device__ __forceinline__ unsigned long long significand(uint32_t k) {
  uint32_t e = k >> 23, m = k & 0x7fffffu;
  return e ? (m | 0x800000u) : m;
}
// 2^(max(e, 1) - 150) as a double, built from its bits (e = the float exponent field, 0..255).
__device__ __forceinline__ double scale_of_exponent(uint32_t e) {
  return __longlong_as_double((long long)((int)(e ? e : 1) - 150 + 1023) << 52);
}

struct Shared {
  float approx[kBins];              // step 1: float32 mass per d1 bin
  unsigned long long exact[kBins];  // steps 2-3: count << 44 | integer significand sum
  uint32_t stage[kStage];           // the row (short rows) or the keys of b1
  double warp_f[kWarps];
  unsigned long long warp_i[kWarps];
  double f;                         // block_sum result
  int best, lowest, moves;          // pick() / step 2 scratch
  uint32_t n_stage;                 // keys of b1 seen in step 2 (staged while <= kStage)
  uint32_t bin;                     // pick() result: the chosen bin ...
  unsigned long long i_above;       // ... and the integer significand sum above it (exact mode)
};

// Deterministic block sum (fixed shuffle tree, then warps in order); every thread gets the result.
__device__ double block_sum(double v, Shared& sh) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(kFull, v, off);
  if ((threadIdx.x & 31) == 0) sh.warp_f[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = 0.0;
    for (int w = 0; w < kWarps; ++w) s += sh.warp_f[w];
    sh.f = s;
  }
  __syncthreads();
  double r = sh.f;
  __syncthreads();
  return r;
}

// 16-byte vectors of keys: 4 float32 or 8 float16/bfloat16 values.
template <typename T> struct Vec;
template <> struct Vec<float> {
  static constexpr int kN = 4;
  __device__ static float get(const uint4& r, int j) { return __uint_as_float((&r.x)[j]); }
};
template <> struct Vec<__half> {
  static constexpr int kN = 8;
  __device__ static float get(const uint4& r, int j) {
    const unsigned short h = (unsigned short)((&r.x)[j >> 1] >> (16 * (j & 1)));
    return __half2float(__ushort_as_half(h));
  }
};
template <> struct Vec<__nv_bfloat16> {
  static constexpr int kN = 8;
  __device__ static float get(const uint4& r, int j) {
    return __uint_as_float(((&r.x)[j >> 1] >> (16 * (j & 1))) << 16);
  }
};

// Visit every key of the row once: f(valid, k, x). Uniform trip count across the block (f may use
// warp votes). Keys come from shared memory when staged (n_staged >= 0), else from global memory:
// 16-byte vector loads when the row is 16-byte aligned, the next vectors loaded while the current
// ones are processed; on_vector(valid, vector index, max key) runs after each vector (aligned path
// only; the last n % Vec<T>::kN keys go through the scalar tail).
struct NoVectorHook {
  __device__ void operator()(bool, int64_t, uint32_t) const {}
};

template <typename T, typename F, typename H = NoVectorHook>
__device__ __forceinline__ void for_each_key(const T* __restrict__ row, int64_t n, const uint32_t* staged,
                                             int n_staged, bool aligned, F&& f, H on_vector = H()) {
  if (n_staged >= 0) {
    for (int base = 0; base < n_staged; base += kThreads) {
      const int i = base + threadIdx.x;
      const bool valid = i < n_staged;
      const uint32_t k = valid ? staged[i] : 0u;
      f(valid, k, __uint_as_float(k));
    }
    return;
  }
  auto visit = [&](bool valid, float v) {
    const uint32_t k = __float_as_uint(v) & 0x7fffffffu;  // -0.0 counts as 0
    f(valid, k, __uint_as_float(k));
  };
  int64_t done = 0;
  if (aligned) {
    constexpr int kV = Vec<T>::kN;
    const uint4* vrow = reinterpret_cast<const uint4*>(row);
    const int64_t nv = n / kV;
    const int64_t step = (int64_t)kThreads * kUnroll;
    uint4 cur[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = (int64_t)u * kThreads + threadIdx.x;
      cur[u] = i < nv ? __ldg(vrow + i) : make_uint4(0, 0, 0, 0);
    }
    for (int64_t base = 0; base < nv; base += step) {
      uint4 nxt[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t i = base + step + (int64_t)u * kThreads + threadIdx.x;
        nxt[u] = i < nv ? __ldg(vrow + i) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t vi = base + (int64_t)u * kThreads + threadIdx.x;
        const bool valid = vi < nv;
        uint32_t vmax = 0;
#pragma unroll
        for (int j = 0; j < kV; ++j) {
          const float v = Vec<T>::get(cur[u], j);
          visit(valid, v);
          vmax = max(vmax, __float_as_uint(v) & 0x7fffffffu);
        }
        on_vector(valid, vi, vmax);  // uniform across the warp: the hook may shuffle
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) cur[u] = nxt[u];
    }
    done = nv * kV;
  }
  for (int64_t base = done; base < n; base += (int64_t)kThreads * kUnroll) {
    float v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = base + (int64_t)u * kThreads + threadIdx.x;
      v[u] = i < n ? to_float(row[i]) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) visit(base + (int64_t)u * kThreads + threadIdx.x < n, v[u]);
  }
}

// Add val to hist[bin] for lanes with bin != kNoBin; a warp whose lanes all share one bin adds once
// (rows of ties or zeros would otherwise serialise on one shared-memory word).
constexpr uint32_t kNoBin = 0xffffffffu;
template <typename V>
__device__ __forceinline__ void warp_add(V* hist, uint32_t bin, V val) {
  if (!__any_sync(kFull, bin != kNoBin)) return;
  const uint32_t b0 = __shfl_sync(kFull, bin, 0);
  if (__all_sync(kFull, bin == b0)) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) val += __shfl_xor_sync(kFull, val, off);
    if ((threadIdx.x & 31) == 0) atomicAdd(&hist[b0], val);
  } else if (bin != kNoBin) {
    atomicAdd(&hist[bin], val);
  }
}

// Bin accessors for pick(): level 1 reads the approximate float32 masses, levels 2-3 the exact counts.
struct ApproxBins {
  const float* m;
  bool zero;
  static constexpr bool kExact = false;
  __device__ bool present(int b) const { return m[b] > 0.0f || (b == 0 && zero); }
  __device__ double mass(int b) const { return (double)m[b]; }
  __device__ unsigned long long isum(int) const { return 0; }
};
struct ExactTopBins {  // exact d1 histogram (the fallback of step 2)
  const unsigned long long* h;
  static constexpr bool kExact = false;
  __device__ bool present(int b) const { return (h[b] >> 44) != 0; }
  __device__ double mass(int b) const { return scale_of_exponent((uint32_t)b >> 3) * (double)(h[b] & kSumMask); }
  __device__ unsigned long long isum(int) const { return 0; }
};
struct ExactBins {
  const unsigned long long* h;
  static constexpr bool kExact = true;
  __device__ bool present(int b) const { return (h[b] >> 44) != 0; }
  __device__ double mass(int) const { return 0.0; }
  __device__ unsigned long long isum(int b) const { return h[b] & kSumMask; }
};

// The whole block picks the bin holding theta, walking bins from the top; thread t owns `per`
// consecutive bins from nbins-1-t*per downwards. The mass at or above bin b is
//   approximate (level 1):  S(b) = P_t + W_t(b)   (P_t: threads above, fixed-order scan; W_t: in-thread)
//   exact (levels 2-3):     S(b) = base + scale * (i0 + I(b))   (I(b): exact integer suffix)
// The chosen bin is the topmost present bin with S(b) >= target; when none qualifies (p = 1, or p
// rounding to the whole mass) the lowest present bin. Writes sh.bin and sh.i_above (exact mode: the
// integer sum above the chosen bin, i0 included).
template <typename Bins>
__device__ void pick(const Bins& bins, int nbins, double base, double scale, unsigned long long i0, double target,
                     bool lowest_only, Shared& sh) {
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const int per = nbins >= kThreads ? nbins / kThreads : 1;
  const int c = t * per < nbins ? per : 0;
  const int top = nbins - 1 - t * per;
  double lsum = 0.0;
  unsigned long long isum = 0;
  for (int j = 0; j < c; ++j) {
    if (Bins::kExact) isum += bins.isum(top - j);
    else lsum += bins.mass(top - j);
  }
  double incl = lsum;
  unsigned long long iincl = isum;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const double y = __shfl_up_sync(kFull, incl, off);
    const unsigned long long iy = __shfl_up_sync(kFull, iincl, off);
    if (lane >= off) {
      incl = y + incl;
      iincl += iy;
    }
  }
  double excl = __shfl_up_sync(kFull, incl, 1);
  unsigned long long iexcl = __shfl_up_sync(kFull, iincl, 1);
  if (lane == 0) {
    excl = 0.0;
    iexcl = 0;
  }
  if (lane == 31) {
    sh.warp_f[warp] = incl;
    sh.warp_i[warp] = iincl;
  }
  if (t == 0) {
    sh.best = kThreads;
    sh.lowest = -1;
  }
  __syncthreads();
  double prefix = 0.0;
  unsigned long long run = i0;
  for (int k = 0; k < warp; ++k) {
    prefix += sh.warp_f[k];
    run += sh.warp_i[k];
  }
  prefix = prefix + excl;
  run += iexcl;
  int found = -1, lowest = -1;
  double w = 0.0;
  unsigned long long i_found = 0, i_lowest = 0;
  for (int j = 0; j < c; ++j) {
    const int b = top - j;
    double s;
    unsigned long long run_next = run;
    if (Bins::kExact) {
      run_next = run + bins.isum(b);
      s = base + scale * (double)run_next;
    } else {
      w = w + bins.mass(b);
      s = prefix + w;
    }
    if (bins.present(b)) {
      lowest = b;
      i_lowest = run;
      if (found < 0 && !lowest_only && s >= target) {
        found = b;
        i_found = run;
      }
    }
    run = run_next;
  }
  if (found >= 0) atomicMin(&sh.best, t);
  if (lowest >= 0) atomicMax(&sh.lowest, t);
  __syncthreads();
  const bool qualified = sh.best < kThreads;
  if (t == (qualified ? sh.best : sh.lowest)) {
    sh.bin = (uint32_t)(qualified ? found : lowest);
    sh.i_above = qualified ? i_found : i_lowest;
  }
  __syncthreads();
}

template <typename T>
__global__ void __launch_bounds__(kThreads) nucleus_radix_kernel(const T* __restrict__ w, int64_t n, int64_t stride,
                                                                 double p, int p_one, double* theta, int32_t* tkey,
                                                                 int32_t* cmax, int64_t n_chunks, int chunk) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Shared& sh = *reinterpret_cast<Shared*>(smem_raw);
  const T* row = w + (int64_t)blockIdx.x * stride;
  const bool one = p_one != 0;
  const bool short_row = n <= kStage;
  const bool aligned = ((reinterpret_cast<uintptr_t>(w) | (uintptr_t)(stride * (int64_t)sizeof(T))) & 15) == 0;

  // step 1: approximate d1 masses, exact total, zero keys; stage short rows
  for (int i = threadIdx.x; i < kBins; i += kThreads) sh.approx[i] = 0.0f;
  __syncthreads();
  double tot = 0.0;
  int zero = 0;
  // fused chunk maxima (cmax != nullptr only when the row is aligned and a chunk is 2^j vectors, j <= 5)
  const int group = chunk / Vec<T>::kN;  // vectors per chunk = lanes that share one chunk
  int32_t* cmax_row = cmax ? cmax + (int64_t)blockIdx.x * n_chunks : nullptr;
  auto chunk_max = [&](bool valid, int64_t vi, uint32_t vmax) {
    if (cmax_row == nullptr) return;
    for (int off = 1; off < group; off <<= 1) vmax = max(vmax, __shfl_xor_sync(kFull, vmax, off));
    if (valid && (threadIdx.x % group) == 0) cmax_row[vi / group] = (int32_t)vmax;
  };
  for_each_key(row, n, nullptr, -1, aligned, [&](bool valid, uint32_t k, float x) {
    warp_add(sh.approx, valid ? (k >> 20) : kNoBin, valid ? x : 0.0f);
    if (valid) {
      tot += (double)x;
      zero |= k == 0u;
    }
  }, chunk_max);
  if (cmax_row != nullptr) {  // the scalar tail (< one vector of keys): at most two chunks, one thread
    __syncthreads();
    if (threadIdx.x == 0) {
      const int64_t vec_end = n / Vec<T>::kN * Vec<T>::kN;
      int64_t c_open = -1;
      uint32_t m = 0;
      for (int64_t i = vec_end; i < n; ++i) {
        const int64_t c = i / chunk;
        if (c != c_open) {
          if (c_open >= 0) cmax_row[c_open] = (int32_t)m;
          c_open = c;
          m = c * chunk < vec_end ? (uint32_t)cmax_row[c] : 0u;  // a chunk begun by vectors
        }
        m = max(m, __float_as_uint(to_float(row[i])) & 0x7fffffffu);
      }
      if (c_open >= 0) cmax_row[c_open] = (int32_t)m;
    }
  }
  if (short_row)  // a short row is read again from L1/L2 into shared memory
    for (int i = threadIdx.x; i < n; i += kThreads) sh.stage[i] = __float_as_uint(to_float(row[i])) & 0x7fffffffu;
  const int any_zero = __syncthreads_or(zero);
  const double total = block_sum(tot, sh);
  const double target = p * total;
  const ApproxBins approx{sh.approx, any_zero != 0};
  pick(approx, kBins, 0.0, 0.0, 0ull, target, one, sh);
  uint32_t b1 = sh.bin;

  // step 2: exact mass above b1 and exact d2 histogram of b1. The guess b1 is verified (the mass at
  // its lowest key reaches the target, the mass above it does not); a wrong guess moves to the
  // neighbouring present bin, and after kMaxMoves the exact d1 histogram decides (one more pass).
  const uint32_t* src = short_row ? sh.stage : nullptr;
  const int n_src = short_row ? (int)n : -1;
  double above = 0.0, scale = 0.0;
  bool trusted = one;  // p = 1 takes the lowest present bin at every level: nothing to verify
  for (int attempt = 0;; ++attempt) {
    for (int i = threadIdx.x; i < kBins; i += kThreads) sh.exact[i] = 0ull;
    if (threadIdx.x == 0) sh.n_stage = 0;
    __syncthreads();
    double up = 0.0;
    for_each_key(row, n, src, n_src, aligned, [&](bool valid, uint32_t k, float x) {
      const bool in = valid && (k >> 20) == b1;
      if (valid && (k >> 20) > b1) up += (double)x;
      warp_add(sh.exact, in ? ((k >> 9) & (kBins - 1)) : kNoBin, in ? kCountOne + significand(k) : 0ull);
      if (in && !short_row) {
        const uint32_t pos = atomicAdd(&sh.n_stage, 1u);
        if (pos < kStage) sh.stage[pos] = k;
      }
    });
    above = block_sum(up, sh);
    scale = scale_of_exponent(b1 >> 3);
    if (trusted) break;
    unsigned long long isum = 0;
    for (int i = threadIdx.x; i < kBins; i += kThreads) isum += sh.exact[i] & kSumMask;
    const double all_b1 = block_sum((double)isum, sh);  // exact: an integer < 2^44
    const bool too_low = above >= target;                   // theta lies above b1
    const bool too_high = above + scale * all_b1 < target;  // theta lies below b1 (same sum as pick's)
    if (!too_low && !too_high) break;
    if (attempt < kMaxMoves) {
      if (threadIdx.x == 0) {  // next present bin in the direction of theta
        int b = (int)b1;
        do { b += too_low ? 1 : -1; } while (b >= 0 && b < kBins && !approx.present(b));
        sh.moves = (b >= 0 && b < kBins) ? b : -1;
      }
      __syncthreads();
      const int moved = sh.moves;
      __syncthreads();
      if (moved >= 0) {
        b1 = (uint32_t)moved;
        continue;
      }
    }
    // exact d1 histogram (64-bit shared atomics, slower), then one trusted step-2 pass
    for (int i = threadIdx.x; i < kBins; i += kThreads) sh.exact[i] = 0ull;
    __syncthreads();
    for_each_key(row, n, src, n_src, aligned, [&](bool valid, uint32_t k, float) {
      warp_add(sh.exact, valid ? (k >> 20) : kNoBin, valid ? kCountOne + significand(k) : 0ull);
    });
    __syncthreads();
    pick(ExactTopBins{sh.exact}, kBins, 0.0, 0.0, 0ull, target, false, sh);
    b1 = sh.bin;
    trusted = true;
  }
  const ExactBins exact{sh.exact};
  pick(exact, kBins, above, scale, 0ull, target, one, sh);
  const uint32_t pre2 = (b1 << 11) | sh.bin;
  const unsigned long long i2 = sh.i_above;

  // step 3: exact d3 histogram of the keys whose top 23 bits are pre2
  const bool staged_b1 = !short_row && sh.n_stage <= (uint32_t)kStage;
  const uint32_t* src3 = short_row ? sh.stage : (staged_b1 ? sh.stage : nullptr);
  const int n_src3 = short_row ? (int)n : (staged_b1 ? (int)sh.n_stage : -1);
  __syncthreads();
  for (int i = threadIdx.x; i < 512; i += kThreads) sh.exact[i] = 0ull;
  __syncthreads();
  for_each_key(row, n, src3, n_src3, aligned, [&](bool valid, uint32_t k, float) {
    const bool in = valid && (k >> 9) == pre2;
    warp_add(sh.exact, in ? (k & 511u) : kNoBin, in ? kCountOne + significand(k) : 0ull);
  });
  __syncthreads();
  pick(exact, 512, above, scale, i2, target, one, sh);
  if (threadIdx.x == 0) {
    const uint32_t k = (pre2 << 9) | sh.bin;
    tkey[blockIdx.x] = (int32_t)k;
    theta[blockIdx.x] = (double)__uint_as_float(k);
  }
}

// Chunk maxima are fused into the first pass when every row is 16-byte aligned and a chunk is 1, 2,
// 4, ..., 32 vectors; *fused says whether they were (else the caller computes them).
template <typename T>
int launch(const void* w, int64_t rows, int64_t n, int64_t stride, double p, int p_one, double* theta, int32_t* tkey,
           int32_t* cmax, int64_t n_chunks, int chunk, int* fused, cudaStream_t stream) {
  constexpr int kV = Vec<T>::kN;
  const bool aligned = ((reinterpret_cast<uintptr_t>(w) | (uintptr_t)(stride * (int64_t)sizeof(T))) & 15) == 0;
  const int group = chunk > 0 && chunk % kV == 0 ? chunk / kV : 0;
  const bool fuse = cmax != nullptr && aligned && group > 0 && group <= 32 && (group & (group - 1)) == 0;
  *fused = fuse ? 1 : 0;
  if (rows <= 0) return 0;
  static bool configured = false;  // one attribute call per instantiation (host side, not per launch)
  if (!configured) {
    cudaError_t e = cudaFuncSetAttribute(nucleus_radix_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)sizeof(Shared));
    if (e != cudaSuccess) return (int)e;
    configured = true;
  }
  nucleus_radix_kernel<T><<<(unsigned)rows, kThreads, sizeof(Shared), stream>>>(
      static_cast<const T*>(w), n, stride, p, p_one, theta, tkey, fuse ? cmax : nullptr, n_chunks, fuse ? chunk : 0);
  return (int)cudaGetLastError();
}

}  // namespace

// dtype: 0 float32, 1 float16, 2 bfloat16. cmax (rows, n_chunks) int32 chunk max keys, or null.
// Returns a cudaError_t (0 = success); *fused = 1 when cmax was filled.
extern "C" int specattn_nucleus_radix(const void* w, int dtype, int64_t rows, int64_t n, int64_t stride, double p,
                                      int p_one, double* theta, int32_t* tkey, int32_t* cmax, int64_t n_chunks,
                                      int chunk, int* fused, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case 0: return launch<float>(w, rows, n, stride, p, p_one, theta, tkey, cmax, n_chunks, chunk, fused, s);
    case 1: return launch<__half>(w, rows, n, stride, p, p_one, theta, tkey, cmax, n_chunks, chunk, fused, s);
    case 2: return launch<__nv_bfloat16>(w, rows, n, stride, p, p_one, theta, tkey, cmax, n_chunks, chunk, fused, s);
    default: return -1;
  }
}

extern "C" const char* specattn_cuda_error_string(int code) { return cudaGetErrorString((cudaError_t)code); }
