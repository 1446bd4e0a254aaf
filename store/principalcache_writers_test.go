package store

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// principalTables are the tables a principal is read from (signing_keys: the principal query
// checks the token's key): a change to one of their rows must reach every instance's principal
// cache before the change's transaction returns.
var principalTables = []string{"sessions", "users", "api_keys", "signing_keys"}

var (
	// rawWrite finds SQL text that changes rows of a principal table.
	rawWrite = regexp.MustCompile(`(?is)\b(update|delete\s+from|truncate(\s+table)?|insert\s+into)\s+"?(sessions|users|api_keys|signing_keys)\b`)
	// builderTarget finds the table a Bun update or delete names, when it names one we know.
	builderTarget  = regexp.MustCompile(`Model\(\(\*(model\.)?\w+\)\(nil\)\)|Table\("\w+"\)|(Model)?TableExpr\("\w+`)
	principalModel = regexp.MustCompile(`Model\(\(\*model\.(Session|User|APIKey|SigningKey)\)\(nil\)\)|Table\("(sessions|users|api_keys|signing_keys)"\)|(Model)?TableExpr\("(sessions|users|api_keys|signing_keys)\b`)
)

// TestPrincipalCache_EveryWriterOfAPrincipalRowRunsInATx reads store's source: every statement
// that updates or deletes rows of sessions, users, api_keys or signing_keys (Bun's builders, or SQL text) must
// run on a *Tx (tx.idb), because only Transact ends with the barrier and waits for the caches.
// A statement on db.idb outside a transaction would commit on its own: the triggers would still
// announce it, but nobody would wait for the instances to drop it. An update or delete whose
// table is not written out (a model in a variable) must run on a *Tx too.
func TestPrincipalCache_EveryWriterOfAPrincipalRowRunsInATx(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") || name == "migrate.go" {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			stmt, ok := n.(ast.Stmt)
			if !ok {
				return true
			}
			if _, block := stmt.(*ast.BlockStmt); block {
				return true
			}
			// The statements that contain no other statement: the unit a query is written in.
			if containsStmt(stmt) {
				return true
			}
			text := source(fset, stmt)
			writes := rawWrite.MatchString(text) && !strings.Contains(text, "NewSelect")
			if strings.Contains(text, ".NewUpdate()") || strings.Contains(text, ".NewDelete()") {
				writes = writes || principalModel.MatchString(text) || !builderTarget.MatchString(text)
			}
			if !writes {
				return true
			}
			checked++
			if !onTx(text) {
				t.Errorf("%s: a write to sessions, users, api_keys or signing_keys outside a *Tx (run it in db.Transact on tx.idb):\n%s",
					fset.Position(stmt.Pos()), text)
			}
			return false
		})
	}
	if checked < 10 {
		t.Fatalf("only %d writers found: the test no longer sees store's writes", checked)
	}
}

// onTx reports whether every query in text runs on a transaction's handle.
func onTx(text string) bool {
	for _, base := range regexp.MustCompile(`(\w+(\.\w+)*)\.(NewUpdate|NewDelete|NewRaw|NewInsert|ExecContext|QueryContext|QueryRowContext|Exec|QueryRow|Query)\(`).FindAllStringSubmatch(text, -1) {
		if base[1] != "tx.idb" {
			return false
		}
	}
	return true
}

func containsStmt(stmt ast.Stmt) bool {
	found := false
	ast.Inspect(stmt, func(n ast.Node) bool {
		if s, ok := n.(ast.Stmt); ok && s != stmt {
			if _, block := s.(*ast.BlockStmt); !block {
				found = true
			}
		}
		return !found
	})
	return found
}

func source(fset *token.FileSet, n ast.Node) string {
	var b bytes.Buffer
	printer.Fprint(&b, fset, n)
	return b.String()
}
