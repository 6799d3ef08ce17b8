package wire

// Regenerate fedrank.pb.go from proto/fedrank/v1/fedrank.proto (see doc.go).
//go:generate go tool -modfile=../tools/go.mod buf lint
//go:generate go tool -modfile=../tools/go.mod buf generate
