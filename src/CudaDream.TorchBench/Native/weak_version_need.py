"""Marks one version requirement of an ELF64 little-endian shared library as weak (VER_FLG_WEAK).

The dynamic loader refuses to load a library whose required symbol version its dependency lacks, unless that
requirement is weak; then only the symbols themselves must resolve (patch-libtorchsharp.sh supplies the one
GLIBCXX_3.4.32 symbol from a shim). Usage: weak_version_need.py LIBRARY VERSION. Prints what it changed."""
import struct
import sys

SHT_GNU_VERNEED = 0x6FFFFFFE
VER_FLG_WEAK = 0x2


def main(path: str, version: str) -> int:
    data = bytearray(open(path, "rb").read())
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        print(f"{path}: not an ELF64 little-endian file", file=sys.stderr)
        return 1
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    # Elf64_Shdr: name, type, flags, addr, offset, size, link, info, addralign, entsize
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    changed = 0
    for section in sections:
        if section[1] != SHT_GNU_VERNEED:
            continue
        strings = sections[section[6]][4]
        need = section[4]
        while True:
            _, count, _, aux_offset, next_need = struct.unpack_from("<HHIII", data, need)  # Elf64_Verneed
            aux = need + aux_offset
            for _ in range(count):
                _, flags, _, name, next_aux = struct.unpack_from("<IHHII", data, aux)  # Elf64_Vernaux
                end = data.index(0, strings + name)
                if data[strings + name:end].decode() == version and not flags & VER_FLG_WEAK:
                    struct.pack_into("<H", data, aux + 4, flags | VER_FLG_WEAK)
                    changed += 1
                aux += next_aux
            if next_need == 0:
                break
            need += next_need
    if changed:
        with open(path, "wb") as f:
            f.write(data)
    print(f"{path}: {version} requirement {'made weak' if changed else 'already weak or absent'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
