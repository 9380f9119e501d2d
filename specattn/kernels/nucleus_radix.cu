// Exact nucleus (top-p) threshold per row by a three-level radix refinement, one CUDA block per row.
//
// Semantics: those of specattn.select (theta = max{v in a : sum(a_i for a_i >= v) >= p * m}, ties in,
// p = 1 -> the row's smallest key, all-zero rows -> 0). Built and loaded by specattn/kernels/radix.py.
//
// Non-negative floats order like their bit patterns ("keys"). A key k = [8 exponent bits | 23 mantissa
// bits] is refined in three digits: d1 = k >> 20 (2048 bins: exponent + 3 mantissa bits), d2 = bits
// 9..19 (2048 bins), d3 = bits 0..8 (512 bins). Each level streams the row once, accumulating in a
// shared-memory histogram, per bin, count << 44 | sum of integer significands. All keys of one d1 bin
// share their exponent, so a bin's mass is exactly scale(bin) * (integer sum): masses are exact, and
// float64 rounding happens only in the fixed-order suffix sums that pick the bin holding theta. Levels
// 2 and 3 keep only the keys of the chosen bin, so the row is read three times and every decision is
// taken on the device (no host synchronisation; CUDA-graph capturable).
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
#define SPECATTN_RADIX_UNROLL 8
#endif
constexpr int kThreads = SPECATTN_RADIX_THREADS;  // a power of two, 32..1024
constexpr int kUnroll = SPECATTN_RADIX_UNROLL;    // loads in flight per thread
constexpr int kBins = 2048;
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
// Exact mass of a level-1 bin (all its keys share the exponent bin >> 3).
__device__ __forceinline__ double bin_mass(uint32_t bin, unsigned long long h) {
  return scale_of_exponent(bin >> 3) * (double)(h & kSumMask);
}

constexpr uint32_t kNoBin = 0xffffffffu;

// Stream the row; keys with (k >> shift_match) == match (all keys when shift_match >= 32) add
// count << 44 | significand to bin (k >> shift_bin) & bin_mask. A warp whose keys all fall in one bin
// adds once (rows of ties or zeros would otherwise serialise on one shared-memory word).
template <typename T>
__device__ void accumulate(const T* __restrict__ row, int64_t n, int shift_match, uint32_t match,
                           int shift_bin, uint32_t bin_mask, unsigned long long* hist) {
  for (int64_t base = 0; base < n; base += (int64_t)kThreads * kUnroll) {
    float v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      int64_t i = base + (int64_t)u * kThreads + threadIdx.x;
      v[u] = i < n ? to_float(row[i]) : -1.0f;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      uint32_t bin = kNoBin;
      unsigned long long val = 0;
      if (v[u] >= 0.0f) {  // padding is -1; -0.0 counts as 0
        uint32_t k = __float_as_uint(v[u]) & 0x7fffffffu;
        if (shift_match >= 32 || (k >> shift_match) == match) {
          bin = (k >> shift_bin) & bin_mask;
          val = kCountOne + significand(k);
        }
      }
      if (!__any_sync(kFull, bin != kNoBin)) continue;
      uint32_t b0 = __shfl_sync(kFull, bin, 0);
      if (__all_sync(kFull, bin == b0)) {
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) val += __shfl_xor_sync(kFull, val, off);
        if ((threadIdx.x & 31) == 0) atomicAdd(&hist[b0], val);
      } else if (bin != kNoBin) {
        atomicAdd(&hist[bin], val);
      }
    }
  }
}

struct Pick {
  uint32_t bin;                // chosen bin of this level
  double prefix;               // level 1: float64 mass of the bins owned by threads above the chosen one
  double w_above;              // level 1: the owning thread's float64 mass above the chosen bin
  unsigned long long i_above;  // levels 2-3: integer significand sum above the chosen bin
};

struct Scratch {
  double warp_sum[kThreads / 32];
  unsigned long long warp_isum[kThreads / 32];
  double total;
  int best, lowest;
  Pick pick[3];
};

// The whole block picks the bin holding theta. Bins are walked from the top: thread t owns
// c = nbins / kThreads consecutive bins (one, or none, when threads outnumber bins), from nbins-1-t*c
// downwards.
//  level 1 (exact = false): bins differ in scale. The mass at or above bin b is S(b) = P_t + W_t(b):
//    P_t = the mass of the threads above (a fixed-order scan), W_t(b) = the thread's bins down to b,
//    added one by one. total = P_last + W_last; target = p * total.
//  levels 2-3 (exact = true): one scale; S(b) = base + (w0 + scale * I(b)) with I(b) the exact integer
//    suffix (plus i0), so the lowest present bin reproduces the parent bin's S bit for bit.
// The chosen bin is the topmost present bin with S(b) >= target; when none qualifies (p = 1, or p
// rounding to the whole mass) it is the lowest present bin.
__device__ void pick_bin(const unsigned long long* hist, int nbins, bool exact, double base, double w0, double scale,
                         unsigned long long i0, double p_or_target, bool p_one, Scratch& sh, Pick& out) {
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const int per = nbins >= kThreads ? nbins / kThreads : 1;
  const int c = t * per < nbins ? per : 0;  // bins owned by this thread (0 when threads outnumber bins)
  const int top = nbins - 1 - t * per;
  double lsum = 0.0;
  unsigned long long isum = 0;
  for (int j = 0; j < c; ++j) {
    const unsigned long long h = hist[top - j];
    if (exact) isum += h & kSumMask;
    else lsum += bin_mass(top - j, h);
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
    sh.warp_sum[warp] = incl;
    sh.warp_isum[warp] = iincl;
  }
  if (t == 0) {
    sh.best = kThreads;
    sh.lowest = -1;
  }
  __syncthreads();
  double prefix = 0.0;
  unsigned long long run = i0;
  for (int k = 0; k < warp; ++k) {
    prefix += sh.warp_sum[k];
    run += sh.warp_isum[k];
  }
  prefix = prefix + excl;
  run += iexcl;
  double target = p_or_target;
  if (!exact) {
    if (t == kThreads - 1) sh.total = prefix + lsum;
    __syncthreads();
    target = p_or_target * sh.total;
  }
  int found = -1, lowest = -1;
  double w = 0.0, w_found = 0.0, w_lowest = 0.0;
  unsigned long long i_found = 0, i_lowest = 0;
  for (int j = 0; j < c; ++j) {
    const int b = top - j;
    const unsigned long long h = hist[b];
    double s, w_next = w;
    unsigned long long run_next = run;
    if (exact) {
      run_next = run + (h & kSumMask);
      s = base + (w0 + scale * (double)run_next);
    } else {
      w_next = w + bin_mass(b, h);
      s = prefix + w_next;
    }
    if ((h >> 44) != 0) {
      lowest = b;
      w_lowest = w;
      i_lowest = run;
      if (found < 0 && !p_one && s >= target) {
        found = b;
        w_found = w;
        i_found = run;
      }
    }
    w = w_next;
    run = run_next;
  }
  if (found >= 0) atomicMin(&sh.best, t);
  if (lowest >= 0) atomicMax(&sh.lowest, t);
  __syncthreads();
  const bool qualified = sh.best < kThreads;
  if (t == (qualified ? sh.best : sh.lowest)) {
    out.bin = (uint32_t)(qualified ? found : lowest);
    out.prefix = prefix;
    out.w_above = qualified ? w_found : w_lowest;
    out.i_above = qualified ? i_found : i_lowest;
  }
  __syncthreads();
}

template <typename T>
__global__ void __launch_bounds__(kThreads) nucleus_radix_kernel(const T* __restrict__ w, int64_t n, int64_t stride,
                                                                 double p, int p_one, double* theta, int32_t* tkey) {
  __shared__ unsigned long long hist[kBins];
  __shared__ Scratch sh;
  const T* row = w + (int64_t)blockIdx.x * stride;
  const bool one = p_one != 0;

  // level 1: d1 = k >> 20 over the whole row
  for (int i = threadIdx.x; i < kBins; i += kThreads) hist[i] = 0;
  __syncthreads();
  accumulate(row, n, 32, 0u, 20, kBins - 1, hist);
  __syncthreads();
  pick_bin(hist, kBins, false, 0.0, 0.0, 0.0, 0ull, p, one, sh, sh.pick[0]);
  const uint32_t b1 = sh.pick[0].bin;
  const double base = sh.pick[0].prefix, w0 = sh.pick[0].w_above;
  const double scale = scale_of_exponent(b1 >> 3);
  const double target = p * sh.total;

  // level 2: d2 = bits 9..19 of the keys in bin b1
  for (int i = threadIdx.x; i < kBins; i += kThreads) hist[i] = 0;
  __syncthreads();
  accumulate(row, n, 20, b1, 9, kBins - 1, hist);
  __syncthreads();
  pick_bin(hist, kBins, true, base, w0, scale, 0ull, target, one, sh, sh.pick[1]);
  const uint32_t pre2 = (b1 << 11) | sh.pick[1].bin;

  // level 3: d3 = bits 0..8 of the keys whose top 23 bits are pre2
  for (int i = threadIdx.x; i < 512; i += kThreads) hist[i] = 0;
  __syncthreads();
  accumulate(row, n, 9, pre2, 0, 511, hist);
  __syncthreads();
  pick_bin(hist, 512, true, base, w0, scale, sh.pick[1].i_above, target, one, sh, sh.pick[2]);
  if (threadIdx.x == 0) {
    const uint32_t k = (pre2 << 9) | sh.pick[2].bin;
    tkey[blockIdx.x] = (int32_t)k;
    theta[blockIdx.x] = (double)__uint_as_float(k);
  }
}

template <typename T>
int launch(const void* w, int64_t rows, int64_t n, int64_t stride, double p, int p_one, double* theta, int32_t* tkey,
           cudaStream_t stream) {
  if (rows <= 0) return 0;
  nucleus_radix_kernel<T><<<(unsigned)rows, kThreads, 0, stream>>>(static_cast<const T*>(w), n, stride, p, p_one,
                                                                    theta, tkey);
  return (int)cudaGetLastError();
}

}  // namespace

// dtype: 0 float32, 1 float16, 2 bfloat16. Returns a cudaError_t (0 = success).
extern "C" int specattn_nucleus_radix(const void* w, int dtype, int64_t rows, int64_t n, int64_t stride, double p,
                                      int p_one, double* theta, int32_t* tkey, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case 0: return launch<float>(w, rows, n, stride, p, p_one, theta, tkey, s);
    case 1: return launch<__half>(w, rows, n, stride, p, p_one, theta, tkey, s);
    case 2: return launch<__nv_bfloat16>(w, rows, n, stride, p, p_one, theta, tkey, s);
    default: return -1;
  }
}

extern "C" const char* specattn_cuda_error_string(int code) { return cudaGetErrorString((cudaError_t)code); }
