/// Library version string.
namespace indexlab {
const char* version() { return "0.1.0"; }
}  // namespace indexlab
