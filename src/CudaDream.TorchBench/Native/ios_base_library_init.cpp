// std::ios_base_library_init(), for libLibTorchSharp.so on a libstdc++ older than GCC 13's.
//
// TorchSharp 0.107.0's libLibTorchSharp.so was built with GCC 13, whose <iostream> makes every translation unit
// call this function (version GLIBCXX_3.4.32) instead of constructing its own std::ios_base::Init object. That is
// the binary's only use of a libstdc++ newer than GCC 12's, which is what Debian bookworm has. The function's whole
// job is to make sure the standard streams are constructed before use; a function-local ios_base::Init does exactly
// that on an older libstdc++. patch-libtorchsharp.sh builds this file and links it into libLibTorchSharp.so.
#include <ios>

namespace std
{
__attribute__((visibility("default"))) void ios_base_library_init()
{
    static ios_base::Init streams;
}
}
