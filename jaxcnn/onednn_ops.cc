// Convolutions and matrix products for XLA on CPU, run by oneDNN (the kernels TensorFlow and
// PyTorch use on CPU): three XLA FFI handlers for 2-D convolutions (forward, backward data,
// backward weights) over NHWC activations and HWIO kernels (jax.lax.conv_general_dilated's
// "NHWC", "HWIO", "NHWC"), a query that says whether oneDNN runs a convolution's geometry, and a
// handler for the product of two row-major float32 matrices. jaxcnn/onednn.py registers them and
// wraps them as JAX functions; jaxcnn/layers.py decides which convolutions and dense layers use
// them.
//
// Threads: the library is oneDNN's OpenMP build, but its work runs on XLA's own intra-op
// threads. A convolution splits its batch into one chunk per XLA thread (a product, the columns
// of its result); each thread (the calling one and the tasks it schedules on XLA's pool)
// claims chunks and runs them with a one-thread OpenMP team, and the caller runs whatever
// nobody else claimed (RunChunks). (Letting OpenMP's own threads run each call, as TensorFlow
// and PyTorch do, put three busy threads on two cores whenever XLA ran another op at the same
// time: LeNet-5's train step took 9.0 ms against 6.1 ms this way.) The kernel gradient sums
// the chunks' partial gradients. OpenMP never runs a team of more than one thread here: a
// primitive keeps the thread count it was created with, and one created with two threads (in
// the first version, the one that reordered the kernel) left an OpenMP worker spinning beside
// XLA's threads after every call: ResNet-20's 32x32x16 -> 16 forward took 3.9 ms against 2.0
// ms. So a batch smaller than the thread count runs one image per chunk.

#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace {

namespace ffi = xla::ffi;
using dnnl::memory;

enum Pass : int { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

// One convolution: input (n, h, w, c), kernel (kh, kw, c / groups, o), output (n, oh, ow, o).
struct Geometry {
  int64_t n, h, w, c, o, kh, kw, oh, ow, groups;
  int64_t stride[2], dilation[2], pad_lo[2], pad_hi[2];

  std::array<int64_t, 18> Key() const {
    return {n, h, w, c, o, kh, kw, oh, ow, groups, stride[0], stride[1], dilation[0], dilation[1],
            pad_lo[0], pad_lo[1], pad_hi[0], pad_hi[1]};
  }
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// A primitive for one pass over `n` images, with the memory descriptions it is run with.
struct Plan {
  dnnl::primitive conv;
  memory::desc x, y, user_weights, weights, scratchpad;
  bool reorder = false;  // the primitive's weights format is not HWIO
  dnnl::reorder to_weights, from_weights;
};

memory::desc WeightsDesc(const Geometry& g, memory::data_type dt, memory::format_tag tag) {
  if (g.groups == 1) return memory::desc({g.o, g.c, g.kh, g.kw}, dt, tag);
  // (kh, kw, c / groups, o) with o = group * (o / groups) + j: oneDNN's hwigo.
  return memory::desc({g.groups, g.o / g.groups, g.c / g.groups, g.kh, g.kw}, dt,
                      tag == memory::format_tag::any ? tag : memory::format_tag::hwigo);
}

// The plan of one pass; with `build` false only its primitive descriptor is made, which is what
// says whether oneDNN runs the geometry (building the primitive generates its kernel).
std::shared_ptr<Plan> MakePlan(Pass pass, memory::data_type dt, const Geometry& g, bool build = true) {
  auto& engine = Engine();
  auto plan = std::make_shared<Plan>();
  plan->x = memory::desc({g.n, g.c, g.h, g.w}, dt, memory::format_tag::nhwc);
  plan->y = memory::desc({g.n, g.o, g.oh, g.ow}, dt, memory::format_tag::nhwc);
  plan->user_weights = WeightsDesc(g, dt, memory::format_tag::hwio);
  auto any_weights = WeightsDesc(g, dt, memory::format_tag::any);
  memory::dims strides{g.stride[0], g.stride[1]}, dilates{g.dilation[0] - 1, g.dilation[1] - 1};
  memory::dims pad_l{g.pad_lo[0], g.pad_lo[1]}, pad_r{g.pad_hi[0], g.pad_hi[1]};
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // per-thread buffers: calls may overlap
  auto forward = dnnl::convolution_forward::primitive_desc(
      engine, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, plan->x, any_weights,
      plan->y, strides, dilates, pad_l, pad_r, attr);
  if (pass == kForward) {
    if (build) plan->conv = dnnl::convolution_forward(forward);
    plan->weights = forward.weights_desc();
    plan->scratchpad = forward.scratchpad_desc();
  } else if (pass == kBackwardData) {
    auto pd = dnnl::convolution_backward_data::primitive_desc(engine, dnnl::algorithm::convolution_direct, plan->x,
                                                              any_weights, plan->y, strides, dilates, pad_l, pad_r,
                                                              forward, attr);
    if (build) plan->conv = dnnl::convolution_backward_data(pd);
    plan->weights = pd.weights_desc();
    plan->scratchpad = pd.scratchpad_desc();
  } else {
    auto pd = dnnl::convolution_backward_weights::primitive_desc(engine, dnnl::algorithm::convolution_direct,
                                                                 plan->x, any_weights, plan->y, strides, dilates,
                                                                 pad_l, pad_r, forward, attr);
    if (build) plan->conv = dnnl::convolution_backward_weights(pd);
    plan->weights = pd.diff_weights_desc();
    plan->scratchpad = pd.scratchpad_desc();
  }
  plan->reorder = plan->weights != plan->user_weights;
  if (plan->reorder && build) {
    plan->to_weights = dnnl::reorder(dnnl::reorder::primitive_desc(engine, plan->user_weights, engine, plan->weights));
    plan->from_weights = dnnl::reorder(dnnl::reorder::primitive_desc(engine, plan->weights, engine, plan->user_weights));
  }
  return plan;
}

// The plan cached under `key`, made by `make()` the first time (outside the lock: building a
// primitive generates its kernel; a plan made twice at once keeps the first). One cache per
// call site (`make`'s type).
template <typename Key, typename Make>
auto Cached(const Key& key, Make make) -> decltype(make()) {
  static std::mutex mutex;
  static std::map<Key, decltype(make())> plans;
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = plans.find(key);
    if (it != plans.end()) return it->second;
  }
  auto plan = make();
  std::lock_guard<std::mutex> lock(mutex);
  return plans.emplace(key, plan).first->second;
}

// Plans are built once per pass, data type and geometry (batch size included).
std::shared_ptr<Plan> GetPlan(Pass pass, memory::data_type dt, const Geometry& g) {
  return Cached(std::make_tuple(static_cast<int>(pass), static_cast<int>(dt), g.Key()),
                [&] { return MakePlan(pass, dt, g); });
}

dnnl::stream& ThreadStream() {
  thread_local dnnl::stream stream(Engine());
  return stream;
}

// This thread's buffer number `which` (0: scratchpads, 1: kernels), at least `size` bytes.
char* ThreadBuffer(int which, size_t size) {
  thread_local std::vector<char> buffers[2];
  if (buffers[which].size() < size) buffers[which].resize(size);
  return buffers[which].data();
}

size_t ByteWidth(memory::data_type dt) { return dt == memory::data_type::f32 ? 4 : 2; }

// Runs run(i) for every chunk i in [0, count): the calling thread and one task per other XLA
// thread claim chunks until none is left, each with a one-thread OpenMP team (set here, before
// any primitive is built or run on the thread; see the top of this file). Returns the first
// error, or an empty string.
std::string RunChunks(ffi::ThreadPool& pool, int64_t count, std::function<void(int64_t)> run) {
  struct State {
    std::function<void(int64_t)> run;
    int64_t count;
    std::atomic<int64_t> next{0}, done{0};
    std::mutex error_mutex;
    std::string error;
  };
  auto state = std::make_shared<State>();  // a task may start after the call returned: it then claims nothing
  state->run = std::move(run);
  state->count = count;
  auto work = [state] {
    omp_set_num_threads(1);
    for (int64_t i; (i = state->next.fetch_add(1)) < state->count;) {
      try {
        state->run(i);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(state->error_mutex);
        if (state->error.empty()) state->error = e.what();
      }
      state->done.fetch_add(1);
    }
  };
  for (int64_t t = 1; t < count; ++t) pool.Schedule([work] { work(); });
  work();
  while (state->done.load() < count) std::this_thread::yield();
  return state->error;
}

// One call of a convolution handler: the pass, its operands and how its batch is split.
struct Call {
  Pass pass;
  memory::data_type dt;
  Geometry g;
  char *a, *b, *out;  // forward: x, kernel -> y; data: dy, kernel -> dx; weights: x, dy -> dk
  int64_t chunk = 0, chunks = 1;
  std::unique_ptr<char[]> partials;  // backward weights: each chunk's kernel gradient, in the user's layout
  size_t partial_bytes = 0;

  // Runs images [first, first + count) on the calling thread. Each chunk's primitive has its own
  // kernel format (oneDNN may pick another for another batch size: its inner product did, when
  // dense layers were tried here), so each chunk reorders the kernel, or its kernel gradient
  // into `weights_out` (the user's HWIO layout), itself.
  void RunImages(int64_t first, int64_t count, char* weights_out) {
    Geometry part = g;
    part.n = count;
    auto plan = GetPlan(pass, dt, part);
    auto& engine = Engine();
    auto& stream = ThreadStream();
    memory scratchpad(plan->scratchpad, engine, ThreadBuffer(0, plan->scratchpad.get_size()));
    memory user(plan->user_weights, engine, pass == kBackwardWeights ? weights_out : b);
    memory w = plan->reorder ? memory(plan->weights, engine, ThreadBuffer(1, plan->weights.get_size())) : user;
    if (plan->reorder && pass != kBackwardWeights) plan->to_weights.execute(stream, user, w);
    size_t x_image = static_cast<size_t>(g.h * g.w * g.c) * ByteWidth(dt);
    size_t y_image = static_cast<size_t>(g.oh * g.ow * g.o) * ByteWidth(dt);
    if (pass == kForward) {
      memory x(plan->x, engine, a + first * x_image), y(plan->y, engine, out + first * y_image);
      plan->conv.execute(stream, {{DNNL_ARG_SRC, x}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, y},
                                  {DNNL_ARG_SCRATCHPAD, scratchpad}});
    } else if (pass == kBackwardData) {
      memory dy(plan->y, engine, a + first * y_image), dx(plan->x, engine, out + first * x_image);
      plan->conv.execute(stream, {{DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DIFF_SRC, dx},
                                  {DNNL_ARG_SCRATCHPAD, scratchpad}});
    } else {
      memory x(plan->x, engine, a + first * x_image), dy(plan->y, engine, b + first * y_image);
      plan->conv.execute(stream, {{DNNL_ARG_SRC, x}, {DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_DIFF_WEIGHTS, w},
                                  {DNNL_ARG_SCRATCHPAD, scratchpad}});
      if (plan->reorder) plan->from_weights.execute(stream, w, user);
    }
    stream.wait();
  }

  void RunChunk(int64_t i) {
    int64_t first = i * chunk;
    char* weights_out = pass != kBackwardWeights ? nullptr : chunks == 1 ? out : partials.get() + i * partial_bytes;
    RunImages(first, std::min(chunk, g.n - first), weights_out);
  }
};

// out = the sum of `count` float32 arrays of `size` elements laid out one after another.
void SumPartials(const float* partials, int64_t count, size_t size, float* out) {
  for (size_t j = 0; j < size; ++j) out[j] = partials[j] + partials[size + j];
  for (int64_t i = 2; i < count; ++i) {
    const float* p = partials + i * size;
    for (size_t j = 0; j < size; ++j) out[j] += p[j];
  }
}

// The operands' shapes, whichever pass: x's, the kernel's and y's.
struct Shapes {
  ffi::Span<const int64_t> x, kernel, y;
};

Shapes OperandShapes(Pass pass, ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer>& out) {
  return {pass == kBackwardData ? out->dimensions() : a.dimensions(),
          pass == kBackwardWeights ? out->dimensions() : b.dimensions(),
          pass == kForward ? out->dimensions() : (pass == kBackwardData ? a.dimensions() : b.dimensions())};
}

// Runs one pass of geometry g: forward a = x, b = kernel -> y; data a = dy, b = kernel -> dx;
// weights a = x, b = dy -> dk.
ffi::Error Execute(Pass pass, ffi::ThreadPool pool, const Geometry& geometry, ffi::AnyBuffer a, ffi::AnyBuffer b,
                   ffi::Result<ffi::AnyBuffer>& out) {
  if (a.element_type() != ffi::F32 || b.element_type() != ffi::F32 || out->element_type() != ffi::F32) {
    return ffi::Error::InvalidArgument("jaxcnn's oneDNN convolution takes float32 operands only");
  }
  Call call;
  call.pass = pass;
  call.dt = memory::data_type::f32;
  call.g = geometry;
  call.a = static_cast<char*>(a.untyped_data());
  call.b = static_cast<char*>(b.untyped_data());
  call.out = static_cast<char*>(out->untyped_data());
  const Geometry& g = call.g;
  int64_t threads = std::max<int64_t>(1, pool.num_threads());
  try {
    call.chunk = (g.n + threads - 1) / threads;
    call.chunks = (g.n + call.chunk - 1) / call.chunk;
    if (pass == kBackwardWeights && call.chunks > 1) {
      call.partial_bytes = static_cast<size_t>(g.kh * g.kw * (g.c / g.groups) * g.o) * ByteWidth(call.dt);
      call.partials.reset(new char[call.chunks * call.partial_bytes]);  // each written whole by its chunk
    }
    std::string error = RunChunks(pool, call.chunks, [&call](int64_t i) { call.RunChunk(i); });
    if (!error.empty()) return ffi::Error::Internal("oneDNN convolution: " + error);
    if (pass == kBackwardWeights && call.chunks > 1) {
      SumPartials(reinterpret_cast<const float*>(call.partials.get()), call.chunks, call.partial_bytes / 4,
                  reinterpret_cast<float*>(call.out));
    }
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("oneDNN convolution: ") + e.what());
  }
  return ffi::Error::Success();
}

template <Pass pass>
ffi::Error ExecuteConv(ffi::ThreadPool pool, ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> out,
                       ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding_lo,
                       ffi::Span<const int64_t> padding_hi, ffi::Span<const int64_t> dilation, int64_t groups) {
  Shapes s = OperandShapes(pass, a, b, out);
  Geometry g{s.x[0], s.x[1], s.x[2], s.x[3], s.kernel[3], s.kernel[0], s.kernel[1], s.y[1], s.y[2], groups,
             {strides[0], strides[1]}, {dilation[0], dilation[1]}, {padding_lo[0], padding_lo[1]},
             {padding_hi[0], padding_hi[1]}};
  return Execute(pass, pool, g, a, b, out);
}

// Matrix products c (m, k) @ (k, n): a call splits c's columns into one chunk per XLA thread,
// so that each thread reads its own part of b (a dense layer's kernel, the operand that is
// large) and writes its own columns of c.
struct MatmulPlan {
  dnnl::matmul product;
  memory::desc a, b, c, scratchpad;
};

// The plan of a chunk of `columns` of c's n columns.
std::shared_ptr<MatmulPlan> GetMatmulPlan(int64_t m, int64_t k, int64_t n, int64_t columns) {
  return Cached(std::array<int64_t, 4>{m, k, n, columns}, [&] {
    auto plan = std::make_shared<MatmulPlan>();
    auto f32 = memory::data_type::f32;
    plan->a = memory::desc({m, k}, f32, memory::dims{k, 1});
    plan->b = memory::desc({k, columns}, f32, memory::dims{n, 1});
    plan->c = memory::desc({m, columns}, f32, memory::dims{n, 1});
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    auto pd = dnnl::matmul::primitive_desc(Engine(), plan->a, plan->b, plan->c, attr);
    plan->product = dnnl::matmul(pd);
    plan->scratchpad = pd.scratchpad_desc();
    return plan;
  });
}

ffi::Error ExecuteMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                         ffi::Result<ffi::Buffer<ffi::F32>> out) {
  if (a.dimensions().size() != 2 || b.dimensions().size() != 2 || out->dimensions().size() != 2 ||
      a.dimensions()[1] != b.dimensions()[0] || out->dimensions()[0] != a.dimensions()[0] ||
      out->dimensions()[1] != b.dimensions()[1]) {
    return ffi::Error::InvalidArgument("jaxcnn's oneDNN matrix product takes matrices (m, k) and (k, n)");
  }
  int64_t m = a.dimensions()[0], k = a.dimensions()[1], n = b.dimensions()[1];
  float *a_data = a.typed_data(), *b_data = b.typed_data(), *c_data = out->typed_data();
  int64_t threads = std::max<int64_t>(1, pool.num_threads());
  int64_t columns = std::min(n, ((n + threads - 1) / threads + 15) / 16 * 16);  // whole cache lines of c
  int64_t chunks = (n + columns - 1) / columns;
  try {
    std::string error = RunChunks(pool, chunks, [&](int64_t i) {
      int64_t first = i * columns;
      auto plan = GetMatmulPlan(m, k, n, std::min(columns, n - first));
      auto& engine = Engine();
      auto& stream = ThreadStream();
      memory scratchpad(plan->scratchpad, engine, ThreadBuffer(0, plan->scratchpad.get_size()));
      memory a_memory(plan->a, engine, a_data), b_memory(plan->b, engine, b_data + first);
      memory c_memory(plan->c, engine, c_data + first);
      plan->product.execute(stream, {{DNNL_ARG_SRC, a_memory}, {DNNL_ARG_WEIGHTS, b_memory},
                                     {DNNL_ARG_DST, c_memory}, {DNNL_ARG_SCRATCHPAD, scratchpad}});
      stream.wait();
    });
    if (!error.empty()) return ffi::Error::Internal("oneDNN matrix product: " + error);
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("oneDNN matrix product: ") + e.what());
  }
  return ffi::Error::Success();
}

}  // namespace

#define JAXCNN_CONV_BINDING                         \
  ffi::Ffi::Bind()                                  \
      .Ctx<ffi::ThreadPool>()                       \
      .Arg<ffi::AnyBuffer>()                        \
      .Arg<ffi::AnyBuffer>()                        \
      .Ret<ffi::AnyBuffer>()                        \
      .Attr<ffi::Span<const int64_t>>("strides")    \
      .Attr<ffi::Span<const int64_t>>("padding_lo") \
      .Attr<ffi::Span<const int64_t>>("padding_hi") \
      .Attr<ffi::Span<const int64_t>>("dilation")   \
      .Attr<int64_t>("groups")

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxcnn_onednn_conv_forward, ExecuteConv<kForward>, JAXCNN_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxcnn_onednn_conv_backward_data, ExecuteConv<kBackwardData>, JAXCNN_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxcnn_onednn_conv_backward_weights, ExecuteConv<kBackwardWeights>,
                              JAXCNN_CONV_BINDING);

// Whether oneDNN describes all three passes of a float32 convolution with this geometry:
// {n, h, w, c, o, kh, kw, oh, ow, groups, stride_h, stride_w, dilation_h, dilation_w, pad_top,
// pad_left, pad_bottom, pad_right}. Called from Python (ctypes) while tracing, so that a
// convolution oneDNN does not run stays XLA's instead of failing when the step runs. Nothing is
// built or kept: the calls build their own plans, for their chunks' batch sizes.
extern "C" int jaxcnn_onednn_conv_supported(const int64_t* v) {
  omp_set_num_threads(1);  // as for every plan (see the top of this file)
  Geometry g{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9],
             {v[10], v[11]}, {v[12], v[13]}, {v[14], v[15]}, {v[16], v[17]}};
  try {
    for (Pass pass : {kForward, kBackwardData, kBackwardWeights}) MakePlan(pass, memory::data_type::f32, g, false);
  } catch (const std::exception&) {
    return 0;
  }
  return 1;
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxcnn_onednn_matmul, ExecuteMatmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
