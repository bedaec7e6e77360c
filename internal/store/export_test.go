package store

import (
	"database/sql"
	"fmt"
)

// SetSchemaVersionForTest rewrites the schema version of the database at path.
func SetSchemaVersionForTest(path string, v int) error {
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.Exec(fmt.Sprintf("PRAGMA user_version = %d", v))
	return err
}
