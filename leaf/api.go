package leaf

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// APIHandler serves the node's local API, through which a scheduler
// registers application targets at run time (c12s paper, section III):
//
//	GET    /api/v1/targets         list targets
//	POST   /api/v1/targets         add a target (JSON body: Target)
//	DELETE /api/v1/targets/{name}  remove a target
func (a *Agent) APIHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/targets", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.Targets())
	})
	mux.HandleFunc("POST /api/v1/targets", func(w http.ResponseWriter, r *http.Request) {
		var t Target
		dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&t); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("decode target: %w", err))
			return
		}
		switch err := a.AddTarget(t); {
		case errors.Is(err, ErrTargetExists):
			writeError(w, http.StatusConflict, err)
		case err != nil:
			writeError(w, http.StatusBadRequest, err)
		default:
			writeJSON(w, http.StatusCreated, t)
		}
	})
	mux.HandleFunc("DELETE /api/v1/targets/{name}", func(w http.ResponseWriter, r *http.Request) {
		if err := a.RemoveTarget(r.PathValue("name")); err != nil {
			writeError(w, http.StatusNotFound, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}
