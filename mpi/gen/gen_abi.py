#!/usr/bin/env python3
"""Generates libckpt_mpi's exported ABI from one table (mpi/functions.tbl).

Inputs, all read at build time so the ABI follows the MPI actually installed:
  - the real library (its exported MPI_*/PMPI_*/OMPI_C_* functions, through `nm -D`, and the
    sizes of its predefined-object data symbols, through `nm -S -D`);
  - its mpi.h (the prototypes of the C bindings and the predefined objects it declares);
  - functions.tbl: the functions ckpt supports and how ("forward", "custom", ...).

Outputs (into --out):
  abi_exports.cpp    PMPI_X for every supported X, MPI_X as an alias of it
  abi_stubs.c        every other exported function: aborts naming itself
  abi_impl.h         declarations of ckpt::mpi::impl::X for the "custom" entries
  abi_lower.h        struct LowerFns: the lower half's PMPI_X for every table entry
  abi_predefined.cpp the predefined objects, with the real library's exact sizes
"""
import argparse
import os
import re
import subprocess
import sys

# Functions any thread may call (MPI 4.0, 11.6: the thread-safe queries; MPI_Wtime and
# MPI_Wtick read a clock). Every other exported function checks it runs on the thread that
# initialized MPI (ckpt grants MPI_THREAD_FUNNELED at most: runtime.h, check_thread).
ANY_THREAD = {"MPI_Initialized", "MPI_Finalized", "MPI_Query_thread", "MPI_Is_thread_main",
              "MPI_Get_version", "MPI_Get_library_version", "MPI_Wtime", "MPI_Wtick"}

HANDLE_TYPES = ("MPI_Comm", "MPI_Datatype", "MPI_Op", "MPI_Group", "MPI_Request", "MPI_Info",
                "MPI_Errhandler", "MPI_Win", "MPI_File", "MPI_Message")

# struct ompi_predefined_<x>_t -> our object type for it (upper/objects.h)
KIND_OF_STRUCT = {
    "ompi_predefined_communicator_t": "Comm",
    "ompi_predefined_group_t": "Group",
    "ompi_predefined_datatype_t": "Datatype",
    "ompi_predefined_op_t": "Op",
    "ompi_predefined_request_t": "Request",
    "ompi_predefined_errhandler_t": "Errhandler",
    "ompi_predefined_info_t": "Info",
    "ompi_predefined_message_t": "Message",
    "ompi_predefined_win_t": "Win",
    "ompi_predefined_file_t": "File",
}


def check_thread(name):
    """The statement an exported function starts with (nothing for ANY_THREAD)."""
    return "" if name in ANY_THREAD else f'ckpt::mpi::check_thread("{name}"); '


def fail(msg):
    sys.exit(f"gen_abi: {msg}")


def exported(nm, lib):
    """Function and data symbols the real library exports: {name: (type letter, size)}."""
    out = subprocess.run([nm, "-D", "-S", "--defined-only", lib], check=True,
                         capture_output=True, text=True).stdout
    syms = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) == 4:
            syms[f[3]] = (f[2], int(f[1], 16))
        elif len(f) == 3:
            syms[f[2]] = (f[1], 0)
    return syms


def parse_header(path):
    src = open(path).read()
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
    src = re.sub(r"//[^\n]*", "", src)
    protos = {}
    for m in re.finditer(r"OMPI_DECLSPEC\s+([\w\s\*]*?)\b((?:P?MPI|OMPI_C_MPI)_\w+)\s*\(([^;{}#]*?)\)\s*[^;{}#]*;", src):
        ret, name, params = m.group(1).strip(), m.group(2), " ".join(m.group(3).split())
        protos[name] = (ret, params)
    objects = re.findall(r"OMPI_DECLSPEC\s+extern\s+struct\s+(ompi_predefined_\w+_t)\s+(\w+)\s*;", src)
    pointers = re.findall(r"OMPI_DECLSPEC\s+extern\s+MPI_Fint\s*\*\s*(\w+)\s*;", src)
    return protos, objects, pointers


def split_params(params):
    if params.strip() in ("", "void"):
        return []
    out = []
    for p in params.split(","):
        p = p.strip()
        m = re.match(r"^(.*?)(\w+)\s*((?:\[[^\]]*\]\s*)*)$", p)
        if not m or not m.group(1).strip():
            fail(f"cannot read parameter '{p}'")
        out.append((p, m.group(2), m.group(1).strip() + m.group(3)))
    return out


def read_table(path):
    table = []
    for n, line in enumerate(open(path), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        f = line.split()
        if len(f) != 2 or f[1] not in ("forward", "collective", "custom", "lower", "callback"):
            fail(f"{path}:{n}: expected '<MPI_Name> forward|collective|custom|lower|callback'")
        if f[1] == "callback" and not f[0].startswith("OMPI_C_MPI_"):
            fail(f"{path}:{n}: callbacks are the OMPI_C_MPI_* predefined callback functions")
        if f[1] != "callback" and not f[0].startswith("MPI_"):
            fail(f"{path}:{n}: names start with MPI_")
        table.append((f[0], f[1]))
    return table


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nm", required=True)
    ap.add_argument("--lib", required=True)
    ap.add_argument("--header", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--companion", action="append", default=[],
                    help="a library of the MPI installation loaded beside libmpi (libmpi_cxx): "
                         "the libmpi internals it needs are exported too, refusing to be used")
    a = ap.parse_args()

    syms = exported(a.nm, a.lib)
    protos, objects, pointers = parse_header(a.header)
    table = read_table(a.table)
    # Predefined attribute callbacks are written by hand (extern "C", mpi/upper/attrs.cpp):
    # only kept out of the stubs, with no PMPI_ name and no lower-half entry.
    callbacks = [n for n, m in table if m == "callback"]
    for n in callbacks:
        if n not in protos or n not in syms:
            fail(f"{n} is not declared in {a.header} or not exported by {a.lib}")
    table = [(n, m) for n, m in table if m != "callback"]

    functions = sorted(n for n, (t, _) in syms.items()
                       if t in "TWi" and re.match(r"^(P?MPI_|OMPI_C_MPI_)", n))
    names_in_table = {n for n, _ in table}
    for n, _ in table:
        if n not in protos or "P" + n not in protos:
            fail(f"{n} (or P{n}) has no prototype in {a.header}")
        if n not in syms or "P" + n not in syms:
            fail(f"{n} (or P{n}) is not exported by {a.lib}")

    os.makedirs(a.out, exist_ok=True)
    banner = "// Generated by mpi/gen/gen_abi.py from mpi/functions.tbl; do not edit.\n"

    # abi_lower.h: the lower half's entry points for every table entry.
    with open(os.path.join(a.out, "abi_lower.h.tmp"), "w") as f:
        f.write(banner + "#pragma once\n#include <mpi.h>\n\nnamespace ckpt::mpi {\n\n")
        # The MPI-1 attribute functions are declared deprecated; naming them is not a use.
        f.write("#pragma GCC diagnostic push\n#pragma GCC diagnostic ignored \"-Wdeprecated-declarations\"\n")
        f.write("struct LowerFns {\n")
        for n, _ in table:
            f.write(f"    decltype(&::P{n}) {n[4:]} = nullptr;\n")
        f.write("};\n#pragma GCC diagnostic pop\n\n// name of each entry in the lower half, in LowerFns order\n")
        f.write("inline constexpr const char* kLowerNames[] = {\n")
        for n, _ in table:
            f.write(f"    \"P{n}\",\n")
        f.write("};\n\ntemplate <class F> void for_each_lower(LowerFns& l, F&& f) {\n")
        for i, (n, _) in enumerate(table):
            f.write(f"    f(reinterpret_cast<void**>(&l.{n[4:]}), kLowerNames[{i}]);\n")
        f.write("}\n\n}  // namespace ckpt::mpi\n")

    # abi_impl.h: what the hand-written code must define.
    with open(os.path.join(a.out, "abi_impl.h.tmp"), "w") as f:
        f.write(banner + "#pragma once\n#include <mpi.h>\n\nnamespace ckpt::mpi::impl {\n\n")
        for n, mode in table:
            if mode == "custom":
                ret, params = protos[n]
                f.write(f"{ret} {n[4:]}({params});\n")
        f.write("\n}  // namespace ckpt::mpi::impl\n")

    # abi_exports.cpp: supported functions.
    with open(os.path.join(a.out, "abi_exports.cpp.tmp"), "w") as f:
        f.write(banner + '#include <mpi.h>\n#include "abi_impl.h"\n#include "quiesce.h"\n#include "runtime.h"\n\n')
        f.write("using ckpt::mpi::in;\n\n")
        for n, mode in table:
            if mode == "lower":
                continue
            ret, params = protos[n]
            ps = split_params(params)
            args = ", ".join(name for _, name, _ in ps)
            if mode in ("forward", "collective"):
                if ret in HANDLE_TYPES:
                    fail(f"{n} returns a handle: it cannot be 'forward'")
                for text, name, typ in ps:
                    if re.search(r"\b(%s)\b" % "|".join(HANDLE_TYPES), typ) and typ not in HANDLE_TYPES:
                        fail(f"{n}: parameter '{text}' carries handles by address: it cannot be 'forward'")
                body = f"ckpt::mpi::lower().{n[4:]}({', '.join(f'in({name})' for _, name, _ in ps)})"
                if mode == "collective":
                    comms = [name for _, name, typ in ps if typ == "MPI_Comm"]
                    if len(comms) != 1:
                        fail(f"{n}: a collective needs exactly one MPI_Comm parameter")
                    f.write(f"extern \"C\" {ret} P{n}({params}) {{\n    {check_thread(n)}"
                            f"ckpt::mpi::CollectiveScope scope({comms[0]});\n    return {body};\n}}\n")
                    f.write(f"extern \"C\" {ret} {n}({params}) __attribute__((alias(\"P{n}\")));\n")
                    continue
            else:
                body = f"ckpt::mpi::impl::{n[4:]}({args})"
            f.write(f"extern \"C\" {ret} P{n}({params}) {{ {check_thread(n)}return {body}; }}\n")
            f.write(f"extern \"C\" {ret} {n}({params}) __attribute__((alias(\"P{n}\")));\n")

    # abi_stubs.c: everything else the real library exports.
    supported = ({n for n, m in table if m != "lower"} | {"P" + n for n, m in table if m != "lower"} |
                 set(callbacks))
    with open(os.path.join(a.out, "abi_stubs.c.tmp"), "w") as f:
        f.write(banner.replace("//", "/*", 1).rstrip() + " */\n")
        f.write("/* Functions ckpt does not support yet: each aborts naming itself. They are defined\n"
                "   without their prototypes (mpi.h is not included): they never return. */\n")
        f.write("__attribute__((noreturn)) void ckpt_mpi_unsupported(const char* name);\n")
        f.write("#define STUB(n) __attribute__((visibility(\"default\"))) void n(void); "
                "void n(void) { ckpt_mpi_unsupported(#n); }\n")
        for n in functions:
            if n not in supported:
                f.write(f"STUB({n})\n")
        # Open MPI internals a companion library binds to when it is loaded (at once: Debian
        # links with -z now), so a program built with mpicxx loads and runs on the C bindings.
        # Using one of them aborts naming it; a data object is only its real size of zeros, a
        # handle no call accepts (in() gives the lower half a null handle, which it refuses).
        f.write("#define INTERNAL(n, what) __attribute__((visibility(\"default\"))) void n(void); "
                "void n(void) { ckpt_mpi_unsupported(#n \" (\" what \")\"); }\n")
        for lib in a.companion:
            what = os.path.basename(lib).split(".so")[0]
            out = subprocess.run([a.nm, "-D", "--undefined-only", lib], check=True,
                                 capture_output=True, text=True).stdout
            needed = sorted({line.split()[-1].split("@")[0] for line in out.splitlines() if line.split()})
            for n in needed:
                if n in supported or n in functions or n not in syms:
                    continue
                if not re.fullmatch(r"ompi_[A-Za-z0-9_]+", n):
                    fail(f"{lib} needs {n} of {a.lib}: not an Open MPI internal ckpt knows how to stand in for")
                t, size = syms[n]
                if t in "TWi":
                    f.write(f"INTERNAL({n}, \"{what}\")\n")
                elif n not in (name for _, name in objects):
                    f.write(f"__attribute__((visibility(\"default\"))) unsigned char {n}[{max(size, 1)}];\n")

    # abi_predefined.cpp: the predefined objects, sized as in the real library.
    sizes = {}
    for struct, name in objects:
        if struct not in KIND_OF_STRUCT:
            fail(f"unknown predefined type {struct} ({name})")
        if name not in syms:
            fail(f"{name} is declared in mpi.h but not exported by {a.lib}")
        size = syms[name][1]
        if sizes.setdefault(struct, size) != size:
            fail(f"{struct}: objects of different sizes in {a.lib}")
    with open(os.path.join(a.out, "abi_predefined.cpp.tmp"), "w") as f:
        f.write(banner + '#include <mpi.h>\n#include "objects.h"\n\n')
        f.write("// Applications carry copy relocations for these objects: their sizes are the real\n"
                "// library's (nm -S -D), the contents ours.\n")
        for struct, size in sizes.items():
            kind = KIND_OF_STRUCT[struct]
            f.write(f"struct {struct} {{\n    ckpt::mpi::{kind} obj;\n"
                    f"    unsigned char pad[{size:#x} - sizeof(ckpt::mpi::{kind})];\n}};\n")
            f.write(f"static_assert(sizeof({struct}) == {size:#x});\n")
        for struct, name in objects:
            kind = KIND_OF_STRUCT[struct]
            f.write(f"{struct} {name} = {{ckpt::mpi::predefined<ckpt::mpi::{kind}>(\"{name}\"), {{}}}};\n")
        for name in pointers:
            if name not in syms:
                fail(f"{name} is declared in mpi.h but not exported by {a.lib}")
            f.write(f"MPI_Fint* {name} = nullptr;  // Fortran status conversion: unsupported\n")
        f.write("\nnamespace ckpt::mpi {\nconst PredefinedEntry kPredefined[] = {\n")
        for struct, name in objects:
            f.write(f"    {{&{name}.obj.h, \"{name}\"}},\n")
        f.write("};\nconst std::size_t kPredefinedCount = sizeof(kPredefined) / sizeof(kPredefined[0]);\n"
                "}  // namespace ckpt::mpi\n")

    for base in ("abi_lower.h", "abi_impl.h", "abi_exports.cpp", "abi_stubs.c", "abi_predefined.cpp"):
        tmp, dst = os.path.join(a.out, base + ".tmp"), os.path.join(a.out, base)
        os.replace(tmp, dst)


if __name__ == "__main__":
    main()
