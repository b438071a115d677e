/// Tensor files (.npy, .npz, .safetensors) read and written defensively: malformed input gives a Status.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "reference/status.h"

namespace indexlab::compare {

/// Element types. Names follow safetensors ("F32", "BF16", "F8_E4M3", ...); F8_E4M3 is OCP e4m3fn.
enum class DType : uint8_t { F32, F64, F16, BF16, F8_E4M3, I8, I16, I32, I64, U8, U16, U32, U64, BOOL };

/// The safetensors name of a dtype ("F32", "F8_E4M3", ...).
const char* dtype_name(DType dtype);
/// Bytes per element (1, 2, 4 or 8).
int64_t dtype_size(DType dtype);
/// Parses a safetensors dtype name; false when the name is not one of the 14 supported.
bool dtype_from_name(const std::string& name, DType* out);

/// Formats a shape as in messages: "(4, 64, 128)", "(7)", "()".
std::string format_shape(const std::vector<int64_t>& shape);
/// Element count of a shape: errors on a negative dim or a product that overflows int64
/// (a zero dim makes the count 0 whatever the other dims are).
Status checked_numel(const std::vector<int64_t>& shape, int64_t* out);

/// A dense row-major tensor whose elements are stored as raw little-endian bytes.
struct Tensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // () is a scalar
  std::vector<uint8_t> data;   // numel() * dtype_size(dtype) bytes

  /// Product of the dims (1 for a scalar); -1 for an invalid shape (see check()).
  int64_t numel() const;
  /// numel() * dtype_size(dtype); -1 when that is invalid or overflows.
  int64_t nbytes() const;
  /// Verifies the shape (no negative dim, no overflow), data.size() == nbytes() and that BOOL
  /// bytes are 0 or 1.
  Status check() const;

  /// Decodes to fp32. Exact for F32, F16, BF16, F8_E4M3, 8/16-bit integers and BOOL; F64 and
  /// 32/64-bit integers convert only when every element is exactly representable in fp32
  /// (NaN and +-inf count as representable).
  Status to_f32(std::vector<float>* out) const;
  /// Integer dtypes and BOOL only; values outside int32 give an error naming the element.
  Status to_i32(std::vector<int32_t>* out) const;
  /// Integer dtypes and BOOL only; U64 values above INT64_MAX give an error.
  Status to_i64(std::vector<int64_t>* out) const;

  /// An F32 tensor; errors when values.size() differs from the shape's element count.
  static Status from_f32(std::vector<int64_t> shape, const std::vector<float>& values, Tensor* out);
  /// An I32 tensor; errors when values.size() differs from the shape's element count.
  static Status from_i32(std::vector<int64_t> shape, const std::vector<int32_t>& values, Tensor* out);
  /// An I64 tensor; errors when values.size() differs from the shape's element count.
  static Status from_i64(std::vector<int64_t> shape, const std::vector<int64_t>& values, Tensor* out);
  /// A one-byte tensor: dtype U8, I8, F8_E4M3 (codes) or BOOL (values 0 / 1).
  static Status from_u8(std::vector<int64_t> shape, const std::vector<uint8_t>& values, Tensor* out,
                        DType dtype = DType::U8);
  /// Any dtype from its raw little-endian bytes (e.g. BF16 bit patterns); validated by check().
  static Status from_raw(DType dtype, std::vector<int64_t> shape, std::vector<uint8_t> bytes, Tensor* out);
};

/// Tensors by name, in name order.
using TensorMap = std::map<std::string, Tensor>;
/// Safetensors '__metadata__' (string to string).
using Metadata = std::map<std::string, std::string>;

/// The three container formats.
enum class FileFormat { Npy, Npz, Safetensors };

/// Picks the format from the extension (.npy, .npz, .safetensors; case-insensitive).
Status format_from_path(const std::string& path, FileFormat* out);

// ---- In-memory readers and writers ------------------------------------------------------------
// `label` is the file name used in messages ("in.npz: member 'q.npy': ..."). Readers leave *out
// untouched on error.

/// Reads one .npy image (format 1.0 / 2.0 / 3.0, C order, little-endian). Accepted descrs:
/// '<f4' '<f8' '<f2' '<i2' '<i4' '<i8' '<u2' '<u4' '<u8'; one-byte '|i1' '|u1' '|b1' (also with
/// '<' or '>'); '|V1' / '<V1' as F8_E4M3 codes and '|V2' / '<V2' as BF16 bits (what NumPy writes
/// for ml_dtypes float8_e4m3fn / bfloat16 arrays; a V1 array of another fp8 flavour cannot be
/// told apart). Rejected: fortran_order True, big-endian multi-byte descrs, structured or object
/// dtypes, the names 'bfloat16' / 'float8_e4m3fn' (NumPy never writes them), trailing bytes.
Status read_npy(const uint8_t* data, size_t size, const std::string& label, Tensor* out);
/// Writes a .npy byte-for-byte as numpy.save does (BF16 as '<V2', F8_E4M3 as '<V1').
Status write_npy(const Tensor& tensor, std::vector<uint8_t>* out);

/// Reads a .npz: a zip of '<name>.npy' members, stored or deflated, zip64 fields honoured.
/// The CRC-32 of every member is checked; names without '.npy', encrypted members, other
/// compression methods, duplicate or overlapping members are errors.
Status read_npz(const uint8_t* data, size_t size, const std::string& label, TensorMap* out);
/// Writes a stored (uncompressed) .npz byte-for-byte as numpy.savez does for the same members in
/// name order; archives of 4 GiB or more are refused (use .safetensors).
Status write_npz(const TensorMap& tensors, std::vector<uint8_t>* out);

/// Reads a .safetensors image. data_offsets must tile the data area exactly (as the reference
/// implementation demands); unknown keys in a tensor entry and duplicate JSON keys are errors.
/// `metadata` (optional) receives '__metadata__'.
Status read_safetensors(const uint8_t* data, size_t size, const std::string& label, TensorMap* out,
                        Metadata* metadata = nullptr);
/// Writes a .safetensors image laid out as the Python package does (tensors by descending
/// dtype rank then name, header space-padded to 8 bytes); metadata keys in sorted order.
Status write_safetensors(const TensorMap& tensors, const Metadata& metadata, std::vector<uint8_t>* out);

/// Reads any format from memory. A .npy yields one tensor named by the stem of `label`.
Status read_tensors_from_buffer(FileFormat format, const uint8_t* data, size_t size, const std::string& label,
                                TensorMap* out, Metadata* metadata = nullptr);
/// Writes any format to memory. .npy needs exactly one tensor (its name is not stored);
/// non-empty metadata is an error except for .safetensors.
Status write_tensors_to_buffer(FileFormat format, const TensorMap& tensors, std::vector<uint8_t>* out,
                               const Metadata& metadata = {});

// ---- Files --------------------------------------------------------------------------------------

/// Reads a file, the format chosen by extension; a .npy's tensor is named by the file stem.
Status read_tensors(const std::string& path, TensorMap* out, Metadata* metadata = nullptr);
/// Writes a file, the format chosen by extension (see write_tensors_to_buffer).
Status write_tensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata = {});

/// Looks up `name` and checks its shape against `shape` (-1 matches any dim):
/// "in.npz: tensor 'ks' has shape (7) but the problem needs (8)", "in.npz: missing tensor 'w'".
/// `out` (optional) receives a pointer into `tensors`.
Status expect_tensor(const TensorMap& tensors, const std::string& file, const std::string& name,
                     const std::vector<int64_t>& shape, const Tensor** out);

}  // namespace indexlab::compare
