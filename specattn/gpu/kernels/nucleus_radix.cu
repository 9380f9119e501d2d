// Exact nucleus (top-p) threshold per row by radix refinement, one CUDA block per row.
//
// Semantics: those of specattn.select (theta = max{v in a : sum(a_i for a_i >= v) >= p * m}, ties in,
// p = 1 -> the row's smallest key, all-zero rows -> 0). Built and loaded by specattn/kernels/radix.py.
//
// Non-negative floats order like their bit patterns ("keys"). A key k = [8 exponent bits | 23 mantissa
// bits] is refined in three digits: d1 = k >> 20 (2048 bins: exponent + 3 mantissa bits), d2 = bits
// 9..19 (2048 bins), d3 = bits 0..8 (512 bins).
//  1. One pass over the row: an approximate mass per d1 bin (each key's significand rounded to 12 bits,
//     added with one native 32-bit shared-memory atomic; float and 64-bit shared atomics compile to
//     compare-and-swap loops, several times slower), the float64 total in registers; rows of at most
//     kStage keys are staged in shared memory. The bin b1 whose suffix mass crosses p * total is a guess.
//  2. Over the keys: the exact float64 mass of the keys above b1 (registers), and an exact histogram of
//     the keys in b1 by d2 (count << 44 | sum of integer significands: all keys of b1 share one
//     exponent, so a bin's mass is scale * integer, exactly). The guess is verified against the
//     target; a wrong guess (the crossing within rounding of a bin edge) moves b1 to the neighbouring
//     present bin and repeats this step; after kMaxMoves wrong guesses an exact d1 histogram (64-bit
//     atomics, slower) decides. The keys of b1 are compacted for step 3.
//  3. The same exact histogram by d3 over the keys of the chosen d2 bin gives theta.
// Long rows are read twice (three times when b1 holds more than kStage keys); every decision is taken
// on the device (no host synchronisation; CUDA-graph capturable).
//
// Limits: rows shorter than 2^20 keys (the packed count), non-negative finite inputs.
//
// The host code (launch and the extern "C" entry points) is left out when NVRTC compiles the file
// (__CUDACC_RTC__): `python -m specattn.gpu.kernels.aot_check` compiles the device code that way, no GPU needed.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#ifndef __CUDACC_RTC__
#include <cuda_runtime.h>
#include <stdint.h>
#else
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uintptr_t;
#endif

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
constexpr int kStage = 8192;  // keys staged in shared memory (32 KiB): a short row, or the keys of b1
constexpr int kCand = 2048;   // keys of b1 compacted from a staged short row
constexpr int kMaxMoves = 2;  // wrong guesses of b1 moved to a neighbour before the exact d1 fallback
constexpr unsigned long long kCountOne = 1ull << 44;
constexpr unsigned long long kSumMask = kCountOne - 1;
constexpr unsigned kFull = 0xffffffffu;

// Profiling build (scripts/profile_selection_steps.py): -DSPECATTN_RADIX_PROFILE records the SM clock at
// each phase boundary of the first kProfBlocks blocks; specattn_radix_profile() copies them out.
#ifdef SPECATTN_RADIX_PROFILE
constexpr int kProfBlocks = 1024, kProfPoints = 10;
__device__ long long g_prof[kProfBlocks][kProfPoints];
#define PROF(i) \
  if (threadIdx.x == 0 && blockIdx.x < kProfBlocks) g_prof[blockIdx.x][i] = clock64()
#else
#define PROF(i)
#endif

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
  uint32_t guess[kBins];            // step 1: approximate mass per d1 bin (guess_units)
  unsigned long long exact[kBins];  // count << 44 | sum of integer significands, per bin
  uint32_t stage[kStage];           // the row (short rows) or the keys of b1 (long rows)
  uint32_t cand[kCand];             // the keys of b1 (short rows)
  float warp_s[32];                 // per-warp partial results (block_sums, pick)
  double warp_f[2][32];
  unsigned long long warp_i[32];
  int best, lowest, moves;          // pick() / step 2 scratch
  uint32_t n_b1;                    // keys of b1 seen in step 2 (compacted while they fit)
  uint32_t bin;                     // pick() results: the chosen bin, ...
  unsigned long long i_above;       // ... the integer significand sum above it (levels 2-3, i0 included) ...
  double m_above;                   // ... and the mass above it (exact d1 level)
};

__device__ __forceinline__ float* warp_slots(Shared& sh, float) { return sh.warp_s; }
__device__ __forceinline__ double* warp_slots(Shared& sh, double) { return sh.warp_f[0]; }
__device__ __forceinline__ unsigned long long* warp_slots(Shared& sh, unsigned long long) { return sh.warp_i; }

// Deterministic block sums of N <= 2 values (fixed shuffle trees); every thread gets the same results.
template <int N>
__device__ void block_sums(double (&v)[N], Shared& sh) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int j = 0; j < N; ++j) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v[j] += __shfl_xor_sync(kFull, v[j], off);
    if (lane == 0) sh.warp_f[j][threadIdx.x >> 5] = v[j];
  }
  __syncthreads();
#pragma unroll
  for (int j = 0; j < N; ++j) {
    v[j] = lane < kWarps ? sh.warp_f[j][lane] : 0.0;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v[j] += __shfl_xor_sync(kFull, v[j], off);
  }
  __syncthreads();  // warp_f is reused by the next call
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

// Visit every key of the row once: f(valid, i, k, x) (i: the key's index in the row, or in staged). Uniform trip count across the block (f may use
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
  if (n_staged >= 0) {  // kUnroll shared-memory loads issued before their keys are used
    for (int base = 0; base < n_staged; base += kThreads * kUnroll) {
      uint32_t ks[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int i = base + u * kThreads + threadIdx.x;
        ks[u] = i < n_staged ? staged[i] : 0u;
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int i = base + u * kThreads + threadIdx.x;
        f(i < n_staged, (int64_t)i, ks[u], __uint_as_float(ks[u]));
      }
    }
    return;
  }
  auto visit = [&](bool valid, int64_t i, float v) {
    const uint32_t k = __float_as_uint(v) & 0x7fffffffu;  // -0.0 counts as 0
    f(valid, i, k, __uint_as_float(k));
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
          visit(valid, vi * kV + j, v);
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
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = base + (int64_t)u * kThreads + threadIdx.x;
      visit(i < n, i, v[u]);
    }
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

// Approximate mass of a key in units of 2^12 of its binade's ulp (its significand rounded to 12 bits,
// at least 1 so that every present bin is non-zero): a bin of < 2^20 keys sums to < 2^32.
__device__ __forceinline__ uint32_t guess_units(uint32_t k) {
  return max((uint32_t)((significand(k) + 2048u) >> 12), 1u);
}

// Bin accessors for pick(). Acc: the type the suffix sums are scanned in (a float guess, float64 masses
// of the exact d1 histogram, exact integer significand sums of the levels below).
struct GuessBins {
  using Acc = float;
  const uint32_t* h;
  static constexpr bool kExact = false;
  __device__ bool present(int b) const { return h[b] != 0u; }
  __device__ float value(int b) const { return (float)(scale_of_exponent((uint32_t)b >> 3) * 4096.0 * (double)h[b]); }
};
struct ExactTopBins {  // the exact d1 histogram
  using Acc = double;
  const unsigned long long* h;
  static constexpr bool kExact = false;
  __device__ bool present(int b) const { return (h[b] >> 44) != 0; }
  __device__ double value(int b) const { return scale_of_exponent((uint32_t)b >> 3) * (double)(h[b] & kSumMask); }
};
struct ExactBins {
  using Acc = unsigned long long;
  const unsigned long long* h;
  static constexpr bool kExact = true;
  __device__ bool present(int b) const { return (h[b] >> 44) != 0; }
  __device__ unsigned long long value(int b) const { return h[b] & kSumMask; }
};

// Inclusive prefix sum across the lanes of a warp.
template <typename A>
__device__ __forceinline__ A warp_scan(A v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const A y = __shfl_up_sync(kFull, v, off);
    if (lane >= off) v += y;
  }
  return v;
}

// The whole block picks the bin holding theta, walking bins from the top; thread t owns `per`
// consecutive bins from nbins-1-t*per downwards, and R(b) is the Acc sum of the bins above b (a scan
// in a fixed order). The mass at or above bin b is
//   GuessBins, ExactTopBins:  S(b) = R(b) + value(b)
//   ExactBins:                S(b) = base + scale * (i0 + R(b) + value(b))   (exact integers)
// The chosen bin is the topmost present bin with S(b) >= target; when none qualifies (p = 1, or p
// rounding to the whole mass) the lowest present bin. Writes sh.bin and R(chosen bin): sh.m_above
// (as a double) and, for ExactBins, sh.i_above (i0 included).
template <typename Bins>
__device__ void pick(const Bins& bins, int nbins, double base, double scale, unsigned long long i0, double target,
                     bool lowest_only, Shared& sh) {
  using Acc = typename Bins::Acc;
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const int per = nbins >= kThreads ? nbins / kThreads : 1;
  const int c = t * per < nbins ? per : 0;
  const int top = nbins - 1 - t * per;
  Acc own = 0;
  for (int j = 0; j < c; ++j) own += bins.value(top - j);
  const Acc incl = warp_scan(own);
  Acc* slots = warp_slots(sh, Acc());
  if (lane == 31) slots[warp] = incl;
  if (t == 0) {
    sh.best = kThreads;
    sh.lowest = -1;
  }
  __syncthreads();
  const Acc totals = warp_scan(lane < kWarps ? slots[lane] : Acc(0));  // every warp scans the warp totals alike
  const Acc warps_above = __shfl_sync(kFull, totals, (warp + 31) & 31);
  const Acc lanes_above = __shfl_up_sync(kFull, incl, 1);
  Acc run = (warp ? warps_above : Acc(0)) + (lane ? lanes_above : Acc(0));
  if (Bins::kExact) run += (Acc)i0;
  int found = -1, lowest = -1;
  Acc r_found = 0, r_lowest = 0;
  for (int j = 0; j < c; ++j) {
    const int b = top - j;
    const Acc r = run;
    run += bins.value(b);
    const double s = Bins::kExact ? base + scale * (double)run : (double)run;
    if (bins.present(b)) {
      lowest = b;
      r_lowest = r;
      if (found < 0 && !lowest_only && s >= target) {
        found = b;
        r_found = r;
      }
    }
  }
  if (found >= 0) atomicMin(&sh.best, t);
  if (lowest >= 0) atomicMax(&sh.lowest, t);
  __syncthreads();
  const bool qualified = sh.best < kThreads;
  if (t == (qualified ? sh.best : sh.lowest)) {
    const Acc r = qualified ? r_found : r_lowest;
    sh.bin = (uint32_t)(qualified ? found : lowest);
    sh.m_above = (double)r;
    sh.i_above = (unsigned long long)r;
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

  // step 1: approximate d1 masses and the exact total; short rows are staged
  PROF(0);
  for (int i = threadIdx.x; i < kBins; i += kThreads) sh.guess[i] = 0u;
  __syncthreads();
  PROF(1);
  double tot[1] = {0.0};
  // fused chunk maxima (cmax != nullptr only when the row is aligned and a chunk is 2^j vectors, j <= 5)
  const int group = chunk / Vec<T>::kN;  // vectors per chunk = lanes that share one chunk
  int32_t* cmax_row = cmax ? cmax + (int64_t)blockIdx.x * n_chunks : nullptr;
  auto chunk_max = [&](bool valid, int64_t vi, uint32_t vmax) {
    if (cmax_row == nullptr) return;
    for (int off = 1; off < group; off <<= 1) vmax = max(vmax, __shfl_xor_sync(kFull, vmax, off));
    if (valid && (threadIdx.x % group) == 0) cmax_row[vi / group] = (int32_t)vmax;
  };
  for_each_key(row, n, nullptr, -1, aligned, [&](bool valid, int64_t i, uint32_t k, float x) {
    warp_add(sh.guess, valid ? (k >> 20) : kNoBin, valid ? guess_units(k) : 0u);
    if (valid) {
      tot[0] += (double)x;
      if (short_row) sh.stage[i] = k;
    }
  }, chunk_max);
  PROF(2);
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
  block_sums(tot, sh);
  const double target = p * tot[0];
  PROF(3);
  const GuessBins guess{sh.guess};
  pick(guess, kBins, 0.0, 0.0, 0ull, target, one, sh);
  uint32_t b1 = sh.bin;
  PROF(4);

  // step 2: exact d2 histogram of b1 (its keys compacted for step 3) and, after a guess, the exact mass
  // above b1. The guess is verified (the mass at its lowest key reaches the target, the mass above it
  // does not); a wrong guess moves to the neighbouring present bin, and after kMaxMoves the exact d1
  // histogram decides (one more pass).
  const uint32_t* src = short_row ? sh.stage : nullptr;
  const int n_src = short_row ? (int)n : -1;
  uint32_t* b1_keys = short_row ? sh.cand : sh.stage;
  const uint32_t b1_cap = short_row ? kCand : kStage;
  bool above_known = false;
  double above = 0.0, scale = 0.0;
  bool trusted = one;  // p = 1 takes the lowest present bin at every level: nothing to verify
  for (int attempt = 0;; ++attempt) {
    for (int i = threadIdx.x; i < kBins; i += kThreads) sh.exact[i] = 0ull;
    if (threadIdx.x == 0) sh.n_b1 = 0;
    __syncthreads();
    double sums[2] = {0.0, 0.0};  // mass above b1, then the integer significand sum of b1
    for_each_key(row, n, src, n_src, aligned, [&](bool valid, int64_t, uint32_t k, float x) {
      const bool in = valid && (k >> 20) == b1;
      if (!above_known && valid && (k >> 20) > b1) sums[0] += (double)x;
      warp_add(sh.exact, in ? ((k >> 9) & (kBins - 1)) : kNoBin, in ? kCountOne + significand(k) : 0ull);
      if (in) {
        const uint32_t pos = atomicAdd(&sh.n_b1, 1u);
        if (pos < b1_cap) b1_keys[pos] = k;
      }
    });
    PROF(5);
    __syncthreads();
    scale = scale_of_exponent(b1 >> 3);
    if (trusted && above_known) break;
    if (!trusted) {
      unsigned long long isum = 0;
      for (int i = threadIdx.x; i < kBins; i += kThreads) isum += sh.exact[i] & kSumMask;
      sums[1] = (double)isum;  // exact: the block's total is an integer < 2^44
    }
    block_sums(sums, sh);
    above = sums[0];
    above_known = true;
    if (trusted) break;
    const bool too_low = above >= target;                  // theta lies above b1
    const bool too_high = above + scale * sums[1] < target;  // theta lies below b1 (same sum as pick's)
    if (!too_low && !too_high) break;
    above_known = false;
    if (attempt < kMaxMoves) {
      if (threadIdx.x == 0) {  // next present bin in the direction of theta
        int b = (int)b1;
        do { b += too_low ? 1 : -1; } while (b >= 0 && b < kBins && !guess.present(b));
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
    // exact d1 histogram (64-bit shared atomics), then one trusted step-2 pass
    for (int i = threadIdx.x; i < kBins; i += kThreads) sh.exact[i] = 0ull;
    __syncthreads();
    for_each_key(row, n, src, n_src, aligned, [&](bool valid, int64_t, uint32_t k, float) {
      warp_add(sh.exact, valid ? (k >> 20) : kNoBin, valid ? kCountOne + significand(k) : 0ull);
    });
    __syncthreads();
    pick(ExactTopBins{sh.exact}, kBins, 0.0, 0.0, 0ull, target, false, sh);
    b1 = sh.bin;
    above = sh.m_above;
    above_known = trusted = true;
  }
  PROF(6);
  const ExactBins exact{sh.exact};
  pick(exact, kBins, above, scale, 0ull, target, one, sh);
  const uint32_t pre2 = (b1 << 11) | sh.bin;
  const unsigned long long i2 = sh.i_above;
  PROF(7);

  // step 3: exact d3 histogram of the keys whose top 23 bits are pre2 (from the compacted keys of b1
  // when they fit, else from the staged row or the row in global memory)
  const bool compacted = sh.n_b1 <= b1_cap;
  const uint32_t* src3 = compacted ? b1_keys : src;
  const int n_src3 = compacted ? (int)sh.n_b1 : n_src;
  for (int i = threadIdx.x; i < 512; i += kThreads) sh.exact[i] = 0ull;
  __syncthreads();
  for_each_key(row, n, src3, n_src3, aligned, [&](bool valid, int64_t, uint32_t k, float) {
    const bool in = valid && (k >> 9) == pre2;
    warp_add(sh.exact, in ? (k & 511u) : kNoBin, in ? kCountOne + significand(k) : 0ull);
  });
  __syncthreads();
  PROF(8);
  pick(exact, 512, above, scale, i2, target, one, sh);
  if (threadIdx.x == 0) {
    const uint32_t k = (pre2 << 9) | sh.bin;
    tkey[blockIdx.x] = (int32_t)k;
    theta[blockIdx.x] = (double)__uint_as_float(k);
  }
  PROF(9);
}

#ifndef __CUDACC_RTC__
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

#endif  // __CUDACC_RTC__
}  // namespace

#ifndef __CUDACC_RTC__

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

#ifdef SPECATTN_RADIX_PROFILE
// Profiling build only: copies the (kProfBlocks, kProfPoints) int64 clock stamps of the last launch to dst.
extern "C" int specattn_radix_profile(void* dst) {
  return (int)cudaMemcpyFromSymbol(dst, g_prof, sizeof(g_prof));
}
#endif
#endif  // __CUDACC_RTC__
