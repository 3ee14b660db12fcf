/*
 * curve.h -- the training curve as a picture: the trainer's log.csv drawn
 * into a PNG (libpng), so a person sees the run at a glance.
 */
#ifndef GLOW_EXAMPLE_CURVE_H
#define GLOW_EXAMPLE_CURVE_H

/* Read `csv` (rows "seconds,step,train_bpd,test_bpd,..." under a header
 * line; test_bpd may be empty) and write `png`: bits/dim over steps on the
 * left, over minutes on the right, train in blue, test in orange.  Rows
 * appended by a resumed run continue the time axis.  Returns 0, or -1 when
 * the file cannot be read, holds no rows, or the PNG cannot be written. */
int curve_write(const char *csv, const char *png);

#endif
