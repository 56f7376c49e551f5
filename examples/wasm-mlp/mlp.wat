;; mlp.wat: a two-layer perceptron classifier that reads its weights from the host.
;;
;;   hidden = relu(fc1.weight @ x + fc1.bias)        fc1.weight: F32 [H, D], fc1.bias: F32 [H]
;;   logits = fc2.weight @ hidden + fc2.bias         fc2.weight: F32 [C, H], fc2.bias: F32 [C]
;;   class  = argmax(logits)                          (the first maximum)
;;
;; Weights: through the modelreg/1 host ABI (docs/wasm.md). Only the four tensors
;; above are read; any other tensor of the model (e.g. "aux.embedding") is never
;; fetched. Sums run in index order with f32 rounding after every multiply and
;; add (no fused multiply-add): reference.py does the same in NumPy.
;;
;; stdin:  N feature vectors, each D little-endian float32 (N*D*4 bytes).
;; stdout: N records, each C float32 logits then the int32 class ((C+1)*4 bytes).
;; Exit codes: 0 ok, 65 bad input or model, 70 out of memory, 74 I/O error; the
;; reason goes to stderr.
;;
;; Build: python build.py   (wasmtime's wat2wasm; nothing prebuilt is committed)
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "modelreg" "abi_version" (func $abi_version (result i32)))
  (import "modelreg" "tensor_find" (func $tensor_find (param i32 i32) (result i32)))
  (import "modelreg" "tensor_info" (func $tensor_info (param i32 i32) (result i32)))
  (import "modelreg" "tensor_read" (func $tensor_read (param i32 i64 i32 i32) (result i32)))

  (memory (export "memory") 1)

  ;; Fixed layout of the first page:
  ;;   0..8     iovec {ptr, len} for fd_read / fd_write
  ;;   8..12    bytes read / written
  ;;   16..96   tensor_info record: u32 dtype, u32 ndim, u64 nbytes, u64 dims[8]
  ;;   128..    tensor names;  256.. messages;  heap from 1024
  (data (i32.const 128) "fc1.weight")
  (data (i32.const 144) "fc1.bias")
  (data (i32.const 160) "fc2.weight")
  (data (i32.const 176) "fc2.bias")
  (data (i32.const 256) "mlp: the host does not speak modelreg/1\n")              ;; 40
  (data (i32.const 320) "mlp: missing or malformed tensor ")                      ;; 33
  (data (i32.const 384) "mlp: out of memory\n")                                   ;; 19
  (data (i32.const 416) "mlp: input is not a whole number of feature vectors\n")  ;; 52
  (data (i32.const 480) "mlp: cannot read stdin\n")                               ;; 23
  (data (i32.const 512) "mlp: cannot write stdout\n")                             ;; 25
  (data (i32.const 544) "\n")

  (global $heap (mut i32) (i32.const 1024))

  ;; Write all of [ptr, ptr+len) to fd; 0 or a WASI errno.
  (func $write_all (param $fd i32) (param $ptr i32) (param $len i32) (result i32)
    (local $err i32) (local $done i32)
    (block $end
      (loop $again
        (br_if $end (i32.eqz (local.get $len)))
        (i32.store (i32.const 0) (local.get $ptr))
        (i32.store (i32.const 4) (local.get $len))
        (local.set $err (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
        (if (local.get $err) (then (return (local.get $err))))
        (local.set $done (i32.load (i32.const 8)))
        (if (i32.eqz (local.get $done)) (then (return (i32.const 29))))  ;; EIO: no progress
        (local.set $ptr (i32.add (local.get $ptr) (local.get $done)))
        (local.set $len (i32.sub (local.get $len) (local.get $done)))
        (br $again)))
    (i32.const 0))

  (func $fail (param $msg i32) (param $len i32) (param $code i32)
    (drop (call $write_all (i32.const 2) (local.get $msg) (local.get $len)))
    (call $proc_exit (local.get $code))
    unreachable)

  (func $fail_tensor (param $name i32) (param $len i32)
    (drop (call $write_all (i32.const 2) (i32.const 320) (i32.const 33)))
    (drop (call $write_all (i32.const 2) (local.get $name) (local.get $len)))
    (call $fail (i32.const 544) (i32.const 1) (i32.const 65)))

  ;; Make [0, end) addressable, growing the memory; out of memory when it cannot.
  (func $reserve (param $end i64)
    (local $need i64)
    (if (i64.gt_u (local.get $end) (i64.const 0xFFFF0000))
      (then (call $fail (i32.const 384) (i32.const 19) (i32.const 70))))
    (local.set $need
      (i64.sub
        (i64.shr_u (i64.add (local.get $end) (i64.const 65535)) (i64.const 16))
        (i64.extend_i32_u (memory.size))))
    (if (i64.gt_s (local.get $need) (i64.const 0))
      (then
        (if (i32.eq (memory.grow (i32.wrap_i64 (local.get $need))) (i32.const -1))
          (then (call $fail (i32.const 384) (i32.const 19) (i32.const 70)))))))

  ;; Bump allocation, 8-byte aligned.
  (func $alloc (param $size i64) (result i32)
    (local $ptr i32) (local $end i64)
    (local.set $ptr (global.get $heap))
    (local.set $end (i64.add (i64.extend_i32_u (local.get $ptr)) (local.get $size)))
    (call $reserve (i64.add (local.get $end) (i64.const 8)))
    (global.set $heap
      (i32.and (i32.add (i32.wrap_i64 (local.get $end)) (i32.const 7)) (i32.const -8)))
    (local.get $ptr))

  ;; Find an F32 tensor of rank ndim, copy its data to the heap; returns the address.
  ;; Its tensor_info record stays at 16 (dims[0] at 32, dims[1] at 40).
  (func $load (param $name i32) (param $len i32) (param $ndim i32) (result i32)
    (local $idx i32) (local $nbytes i64) (local $ptr i32)
    (local.set $idx (call $tensor_find (local.get $name) (local.get $len)))
    (if (i32.lt_s (local.get $idx) (i32.const 0))
      (then (call $fail_tensor (local.get $name) (local.get $len))))
    (if (i32.ne (call $tensor_info (local.get $idx) (i32.const 16)) (local.get $ndim))
      (then (call $fail_tensor (local.get $name) (local.get $len))))
    (if (i32.ne (i32.load (i32.const 16)) (i32.const 1))   ;; dtype F32
      (then (call $fail_tensor (local.get $name) (local.get $len))))
    (local.set $nbytes (i64.load (i32.const 24)))
    (if (i64.gt_u (local.get $nbytes) (i64.const 0x40000000))   ;; 1 GiB is plenty here
      (then (call $fail_tensor (local.get $name) (local.get $len))))
    (local.set $ptr (call $alloc (local.get $nbytes)))
    (drop (call $tensor_read (local.get $idx) (i64.const 0) (local.get $ptr)
                             (i32.wrap_i64 (local.get $nbytes))))
    (local.get $ptr))

  ;; dims[k] of the record at 16, checked to fit in 30 bits and be non-zero.
  (func $dim (param $k i32) (param $name i32) (param $len i32) (result i32)
    (local $d i64)
    (local.set $d (i64.load (i32.add (i32.const 32) (i32.shl (local.get $k) (i32.const 3)))))
    (if (i32.or (i64.eqz (local.get $d)) (i64.gt_u (local.get $d) (i64.const 0x3FFFFFFF)))
      (then (call $fail_tensor (local.get $name) (local.get $len))))
    (i32.wrap_i64 (local.get $d)))

  (func $main (export "_start")
    (local $w1 i32) (local $b1 i32) (local $w2 i32) (local $b2 i32)
    (local $H i32) (local $D i32) (local $C i32)
    (local $in i32) (local $inlen i32) (local $got i32) (local $n i32)
    (local $hid i32) (local $out i32) (local $reclen i32) (local $rowbytes i32)
    (local $s i32) (local $i i32) (local $j i32) (local $k i32)
    (local $x i32) (local $row i32) (local $rec i32)
    (local $acc f32) (local $best i32) (local $bestv f32)

    (if (i32.ne (call $abi_version) (i32.const 1))
      (then (call $fail (i32.const 256) (i32.const 40) (i32.const 65))))

    ;; ---- weights (fc1 and fc2 only)
    (local.set $w1 (call $load (i32.const 128) (i32.const 10) (i32.const 2)))
    (local.set $H (call $dim (i32.const 0) (i32.const 128) (i32.const 10)))
    (local.set $D (call $dim (i32.const 1) (i32.const 128) (i32.const 10)))
    (local.set $b1 (call $load (i32.const 144) (i32.const 8) (i32.const 1)))
    (if (i32.ne (call $dim (i32.const 0) (i32.const 144) (i32.const 8)) (local.get $H))
      (then (call $fail_tensor (i32.const 144) (i32.const 8))))
    (local.set $w2 (call $load (i32.const 160) (i32.const 10) (i32.const 2)))
    (local.set $C (call $dim (i32.const 0) (i32.const 160) (i32.const 10)))
    (if (i32.ne (call $dim (i32.const 1) (i32.const 160) (i32.const 10)) (local.get $H))
      (then (call $fail_tensor (i32.const 160) (i32.const 10))))
    (local.set $b2 (call $load (i32.const 176) (i32.const 8) (i32.const 1)))
    (if (i32.ne (call $dim (i32.const 0) (i32.const 176) (i32.const 8)) (local.get $C))
      (then (call $fail_tensor (i32.const 176) (i32.const 8))))
    (local.set $hid (call $alloc (i64.shl (i64.extend_i32_u (local.get $H)) (i64.const 2))))

    ;; ---- input: all of stdin, at the end of the heap, 64 KiB at a time
    (local.set $in (global.get $heap))
    (block $eof
      (loop $more
        (call $reserve (i64.add (i64.extend_i32_u (i32.add (local.get $in) (local.get $inlen)))
                                (i64.const 65536)))
        (i32.store (i32.const 0) (i32.add (local.get $in) (local.get $inlen)))
        (i32.store (i32.const 4) (i32.const 65536))
        (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
          (then (call $fail (i32.const 480) (i32.const 23) (i32.const 74))))
        (local.set $got (i32.load (i32.const 8)))
        (br_if $eof (i32.eqz (local.get $got)))
        (local.set $inlen (i32.add (local.get $inlen) (local.get $got)))
        (br $more)))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $in) (local.get $inlen)) (i32.const 7))
                               (i32.const -8)))
    (local.set $rowbytes (i32.shl (local.get $D) (i32.const 2)))
    (if (i32.rem_u (local.get $inlen) (local.get $rowbytes))
      (then (call $fail (i32.const 416) (i32.const 52) (i32.const 65))))
    (local.set $n (i32.div_u (local.get $inlen) (local.get $rowbytes)))
    (local.set $reclen (i32.shl (i32.add (local.get $C) (i32.const 1)) (i32.const 2)))
    (local.set $out (call $alloc (i64.mul (i64.extend_i32_u (local.get $n))
                                          (i64.extend_i32_u (local.get $reclen)))))

    ;; ---- forward pass, sample by sample
    (local.set $s (i32.const 0))
    (block $samples_done
      (loop $samples
        (br_if $samples_done (i32.ge_u (local.get $s) (local.get $n)))
        (local.set $x (i32.add (local.get $in) (i32.mul (local.get $s) (local.get $rowbytes))))
        ;; hidden[j] = relu(b1[j] + sum_i w1[j, i] * x[i])
        (local.set $j (i32.const 0))
        (block $h_done
          (loop $h
            (br_if $h_done (i32.ge_u (local.get $j) (local.get $H)))
            (local.set $acc (f32.load (i32.add (local.get $b1) (i32.shl (local.get $j) (i32.const 2)))))
            (local.set $row (i32.add (local.get $w1) (i32.mul (local.get $j) (local.get $rowbytes))))
            (local.set $i (i32.const 0))
            (block $d_done
              (loop $d
                (br_if $d_done (i32.ge_u (local.get $i) (local.get $D)))
                (local.set $acc
                  (f32.add (local.get $acc)
                    (f32.mul
                      (f32.load (i32.add (local.get $row) (i32.shl (local.get $i) (i32.const 2))))
                      (f32.load (i32.add (local.get $x) (i32.shl (local.get $i) (i32.const 2)))))))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br $d)))
            (f32.store (i32.add (local.get $hid) (i32.shl (local.get $j) (i32.const 2)))
                       (f32.max (local.get $acc) (f32.const 0)))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $h)))
        ;; logits[k] = b2[k] + sum_j w2[k, j] * hidden[j]; class = first argmax
        (local.set $rec (i32.add (local.get $out) (i32.mul (local.get $s) (local.get $reclen))))
        (local.set $k (i32.const 0))
        (block $c_done
          (loop $c
            (br_if $c_done (i32.ge_u (local.get $k) (local.get $C)))
            (local.set $acc (f32.load (i32.add (local.get $b2) (i32.shl (local.get $k) (i32.const 2)))))
            (local.set $row (i32.add (local.get $w2)
                                     (i32.mul (local.get $k) (i32.shl (local.get $H) (i32.const 2)))))
            (local.set $j (i32.const 0))
            (block $j_done
              (loop $jj
                (br_if $j_done (i32.ge_u (local.get $j) (local.get $H)))
                (local.set $acc
                  (f32.add (local.get $acc)
                    (f32.mul
                      (f32.load (i32.add (local.get $row) (i32.shl (local.get $j) (i32.const 2))))
                      (f32.load (i32.add (local.get $hid) (i32.shl (local.get $j) (i32.const 2)))))))
                (local.set $j (i32.add (local.get $j) (i32.const 1)))
                (br $jj)))
            (f32.store (i32.add (local.get $rec) (i32.shl (local.get $k) (i32.const 2))) (local.get $acc))
            (if (i32.or (i32.eqz (local.get $k)) (f32.gt (local.get $acc) (local.get $bestv)))
              (then (local.set $best (local.get $k)) (local.set $bestv (local.get $acc))))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br $c)))
        (i32.store (i32.add (local.get $rec) (i32.shl (local.get $C) (i32.const 2))) (local.get $best))
        (local.set $s (i32.add (local.get $s) (i32.const 1)))
        (br $samples)))

    (if (call $write_all (i32.const 1) (local.get $out) (i32.mul (local.get $n) (local.get $reclen)))
      (then (call $fail (i32.const 512) (i32.const 25) (i32.const 74)))))
)
