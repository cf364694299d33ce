// What this library was built from, read by brainsim.kernels._cpu before it registers any
// kernel: the jaxlib whose FFI headers it was compiled against, and a hash of these sources
// (brainsim.kernels._build defines both on the compiler's command line).

#ifndef BRAINSIM_JAXLIB_VERSION
#error "build with brainsim.kernels._build, which defines BRAINSIM_JAXLIB_VERSION"
#endif

extern "C" const char* BrainsimJaxlibVersion() { return BRAINSIM_JAXLIB_VERSION; }
extern "C" const char* BrainsimSourceHash() { return BRAINSIM_SOURCE_HASH; }
